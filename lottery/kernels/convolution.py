"""The CPU kernels' convolution: :func:`cpu_conv`, what ``nn.Conv`` computes (to float
rounding) as ``lax.conv_general_dilated``, in less time on XLA's CPU backend.

- **Eigen's forward convolutions**, which XLA runs: :func:`trained_conv` hands the forward
  pass and a stride-1 input gradient to oneDNN (:mod:`lottery.kernels.onednn`), up to 3x
  faster on ResNet-20's first layers.
- **The input gradient of a stride-2 convolution**, which XLA computes on a gradient dilated
  with zeros: :func:`stride2_input_gradient` splits it by parity instead (2-3x faster).
- **Convolutions on maps smaller than their kernel** (VGG's last 2x2 maps), which XLA's CPU
  backend runs as plain loops: :func:`small_map_conv` makes them a matrix product.
- **Depthwise convolutions** (MobileNetV2's), which XLA's CPU backend runs as a slow grouped
  convolution: :func:`depthwise_taps` sums shifted slices instead.
- **Convolutions inside a loop**: XLA lays out autodiff's kernel-gradient convolution for
  Eigen at the top level of a program but not in a ``lax.scan``, where it ran as plain
  loops (2.3 s against 20 ms). :func:`kernel_gradient` writes the layout out, so train
  steps fused in a scan run as fast as one step per call (not faster: see
  :func:`lottery.train.steps.fused_steps_limit`).

A convolution's kernel gradient is Eigen's, over the whole batch. Summed over chunks of 16
examples it was 5% faster per ResNet-20 step while every call of Eigen's convolution faulted
in its packing buffer page by page; with malloc's huge pages (:mod:`lottery.kernels.huge_pages`,
which the command sets) the whole batch at once is 4-14% faster (three same-process A/B
runs), and Conv-4 is the same either way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from lottery.kernels import onednn

# Flax's layout: NHWC inputs and outputs, HWIO kernels.
_NHWC = onednn.NHWC

# _POLYPHASE_TAP[phase][offset]: the kernel row (or column) that links input row 2p + phase to
# output row p + offset in a 3x3 convolution of stride 2 padded by 1 (None: no row does).
_POLYPHASE_TAP = ((1, None), (2, 0))


def _pairs(padding: Any) -> tuple[tuple[int, int], ...] | None:
    """Explicit padding as a tuple of (low, high) pairs, None for a string such as "SAME"."""
    if isinstance(padding, str):
        return None
    return tuple((int(low), int(high)) for low, high in padding)


def stride2_input_gradient(g: jax.Array, w: jax.Array) -> jax.Array:
    """The input gradient of a 3x3 convolution with stride 2 and padding 1 (NHWC, HWIO),
    for an input of even height and width, given the output gradient ``g``.

    XLA computes it as a convolution of ``g`` dilated with zeros (three quarters of what it
    multiplies are zeros; on a CPU 2-4x slower than the forward pass). Split by the parity
    of the input row and column instead: input row ``2p`` takes kernel row 1 from output row
    ``p``; row ``2p + 1`` takes kernel row 2 from ``p`` and row 0 from ``p + 1``; the same
    for columns. So one stride-1 2x2 convolution of ``g`` (padded by one zero row and
    column at the end) gives all four parities as ``4 * C_in`` channels, which interleave
    into the input's shape.
    """
    n, height, width, _ = g.shape
    c_in = w.shape[2]
    zero = jnp.zeros(w.shape[2:], w.dtype)

    def tap(row: int, col: int, dh: int, dw: int) -> jax.Array:
        kh, kw = _POLYPHASE_TAP[row][dh], _POLYPHASE_TAP[col][dw]
        return zero if kh is None or kw is None else w[kh, kw]

    kernel = jnp.stack([
        jnp.stack([
            jnp.concatenate([tap(r, c, dh, dw) for r in range(2) for c in range(2)], axis=0).T
            for dw in range(2)
        ])
        for dh in range(2)
    ])  # (2, 2, C_out, 4 * C_in): output channel (row parity, column parity, C_in)
    phases = onednn.convolution(g, kernel, (1, 1), ((0, 1), (0, 1)))
    phases = phases.reshape(n, height, width, 2, 2, c_in).transpose(0, 1, 3, 2, 4, 5)
    return phases.reshape(n, 2 * height, 2 * width, c_in)


def small_map_conv(
    x: jax.Array, w: jax.Array, padding: tuple[tuple[int, int], ...]
) -> jax.Array:
    """A stride-1 convolution (NHWC, HWIO) as one matrix product of the input's patches with
    the kernel, for a map smaller than the kernel (VGG's 2x2 maps under 3x3 kernels).

    XLA rewrites such a convolution, and its gradients, into a form its CPU backend runs as
    plain loops, not Eigen: VGG-16's three 2x2 convolutions took 9 of a train step's 11
    seconds at batch 128. Their patches are a few megabytes, and the product and its
    gradients are ordinary matrix products (3 s -> 45 ms for one 512-channel layer).
    """
    kh, kw = w.shape[:2]
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    height, width = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    patches = jnp.concatenate(
        [padded[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)],
        axis=-1,
    )
    return jnp.dot(patches, w.reshape(kh * kw * w.shape[2], w.shape[3]))


def cpu_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    *,
    train: bool,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated``, but :func:`small_map_conv` on a map smaller than the
    kernel, :func:`depthwise_taps` for a depthwise convolution on a CPU, and, when ``train``,
    :func:`trained_conv` (oneDNN's forward convolution and input gradient,
    :func:`stride2_input_gradient`, :func:`kernel_gradient`) for the rest.

    Evaluation (``train=False``) keeps XLA's convolution but for the first two, which XLA's
    CPU backend would run 50-100x and 3-10x slower."""
    conv = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
    dimensions = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    pads = _pairs(padding)
    plain = (
        dimensions == _NHWC
        and feature_group_count == 1
        and pads is not None
        and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
    )
    if plain and tuple(window_strides) == (1, 1) and (
        lhs.shape[1] < rhs.shape[0] or lhs.shape[2] < rhs.shape[1]
    ):
        return small_map_conv(lhs, rhs, pads)
    if _is_depthwise(lhs, rhs, dimensions, feature_group_count, pads, lhs_dilation, rhs_dilation):
        taps = functools.partial(depthwise_taps, strides=tuple(window_strides), pads=pads)
        return lax.platform_dependent(lhs, rhs, cpu=taps, default=conv)
    strides = tuple(int(s) for s in window_strides)
    # trained_conv takes no precision or other options: with any, XLA's convolution stays.
    default = precision is None and all(value is None for value in kwargs.values())
    if train and plain and default and (
        _polyphase(lhs.shape, rhs.shape, strides, pads) or onednn.usable(lhs, rhs)
    ):
        return trained_conv(lhs, rhs, strides, pads)
    return conv(lhs, rhs)


def _is_depthwise(
    lhs: jax.Array, rhs: jax.Array, dimensions: Any, groups: int, pads: Any, *dilations: Any
) -> bool:
    """Whether a convolution is depthwise (one filter per channel, MobileNetV2's), NHWC with
    explicit padding and no dilation: the case :func:`depthwise_taps` computes."""
    return (
        dimensions == _NHWC
        and groups > 1
        and groups == lhs.shape[-1] == rhs.shape[-1]
        and rhs.shape[2] == 1
        and pads is not None
        and all(d in (None, 1) or tuple(d) == (1, 1) for d in dilations)
    )


def depthwise_taps(
    x: jax.Array, w: jax.Array, strides: Sequence[int], pads: tuple[tuple[int, int], ...]
) -> jax.Array:
    """A depthwise NHWC x (kh, kw, 1, C) convolution as kh * kw shifted, strided slices of
    the padded input times each tap's per-channel weights, summed.

    Why: XLA's CPU backend runs a grouped convolution with one channel per group 3-10x slower
    than these multiply-adds, and its gradients 4-11x slower (3x3, MobileNetV2's shapes at
    batch 64-256, 2-core EPYC); autodiff of slices and products is itself fast.
    """
    (top, bottom), (left, right) = pads
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    sh, sw = (int(s) for s in strides)
    n, height, width, channels = padded.shape
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            end = (n, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, channels)
            tap = lax.slice(padded, (0, i, j, 0), end, (1, sh, sw, 1)) * w[i, j, 0]
            out = tap if out is None else out + tap
    return out


def _polyphase(
    x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int], pads: Any
) -> bool:
    """Whether :func:`stride2_input_gradient` computes this convolution's input gradient."""
    return (
        tuple(strides) == (2, 2)
        and tuple(w_shape[:2]) == (3, 3)
        and pads == ((1, 1), (1, 1))
        and x_shape[1] % 2 == 0
        and x_shape[2] % 2 == 0
    )


def kernel_gradient(
    x: jax.Array,
    g: jax.Array,
    window: Sequence[int],
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], ...],
) -> jax.Array:
    """The kernel gradient (HWIO) of an NHWC x HWIO convolution with ``window``, ``strides``
    and ``pads``, given its input ``x`` and output gradient ``g``.

    What autodiff gives, but written as a convolution whose operands are transposed
    explicitly into the layout XLA's CPU backend hands to Eigen: the input as
    (C_in, H, W, N), a "batch" of input channels with the examples as features, and the
    output gradient, dilated by the stride, as a (H_out, W_out, N, C_out) "kernel". Autodiff's
    convolution leaves the layouts to XLA, which makes the same transposes at the top level
    of a program but not inside a loop: there it ran the convolution as plain loops (ResNet-20's
    32x32x16 kernel gradient: 2.3 s in a ``lax.scan`` against 20 ms alone). At the top level
    the two give that layer's gradient bit for bit (checked).
    """
    kh, kw = window
    bounds = []
    for axis, (size, k, stride, (low, _)) in enumerate(
        zip(x.shape[1:3], window, strides, pads, strict=True)
    ):
        # The padded rows the forward pass read end with the last window, which starts at
        # (out - 1) * stride: the high padding that reaches exactly there (negative: a crop).
        bounds.append((low, k + (g.shape[1 + axis] - 1) * stride - size - low))
    crop = [max(0, -high) for _, high in bounds]
    if any(crop):  # rows past the last window, which no output read
        x = x[:, : x.shape[1] - crop[0], : x.shape[2] - crop[1], :]
        bounds = [(low, max(0, high)) for low, high in bounds]
    out = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)),
        jnp.transpose(g, (1, 2, 0, 3)),
        window_strides=(1, 1),
        padding=bounds,
        rhs_dilation=strides,
        dimension_numbers=_NHWC,
    )  # (C_in, kh, kw, C_out)
    assert out.shape[1:3] == (kh, kw), (out.shape, window)
    return jnp.transpose(out, (1, 2, 0, 3))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def trained_conv(
    x: jax.Array, w: jax.Array, strides: tuple[int, int], pads: tuple[tuple[int, int], ...]
) -> jax.Array:
    """An NHWC x HWIO convolution for training on a CPU: the forward pass and a stride-1
    input gradient in oneDNN (:mod:`lottery.kernels.onednn`, where usable), a stride-2 input
    gradient by :func:`stride2_input_gradient`, the kernel gradient by
    :func:`kernel_gradient`: each a convolution in the layout XLA's CPU backend gives Eigen,
    inside a loop too."""
    return onednn.convolution(x, w, strides, pads)


def _trained_conv_forward(
    x: jax.Array, w: jax.Array, strides: tuple[int, int], pads: tuple[tuple[int, int], ...]
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return trained_conv(x, w, strides, pads), (x, w)


def _trained_conv_backward(
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], ...],
    residuals: tuple[jax.Array, jax.Array],
    g: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    x, w = residuals
    xla = functools.partial(onednn.xla_convolution, strides=strides, padding=pads)
    # kernel_gradient's layout is the CPU's; elsewhere XLA's own form of the same gradient.
    dw = lax.platform_dependent(
        x, g,
        cpu=lambda x, g: kernel_gradient(x, g, w.shape[:2], strides, pads),
        default=lambda x, g: jax.vjp(lambda w: xla(x, w), w)[1](g)[0],
    )
    kh, kw = w.shape[:2]
    # A stride-1 input gradient is the output gradient convolved with the flipped kernel
    # (inputs and outputs swapped), padded to give back the input's size.
    back = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]), (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
    if strides == (1, 1) and min(min(pair) for pair in back) >= 0 and onednn.usable(g, w):
        dx = onednn.convolution(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1), back)
    elif _polyphase(x.shape, w.shape, strides, pads):
        dx = stride2_input_gradient(g, w)
    else:
        dx = jax.vjp(lambda x: xla(x, w), x)[1](g)[0]
    return dx, dw


trained_conv.defvjp(_trained_conv_forward, _trained_conv_backward)
