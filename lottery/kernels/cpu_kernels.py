"""Training kernels for XLA's CPU backend: a convolution, a BatchNorm and a max-pool that
compute what Flax's ``nn.Conv``, ``nn.BatchNorm`` and ``nn.max_pool`` compute, to float
rounding, in less time there.

Measured on a 2-core CPU with jax 0.10 (``benchmarks/conv_cpu.py``), these are what XLA's
CPU backend does slowly in a train step:

- **Eigen's forward convolutions**, which XLA runs: :func:`trained_conv` hands the forward
  pass and a stride-1 input gradient to oneDNN (:mod:`lottery.kernels.onednn`), up to 3x
  faster on ResNet-20's first layers.
- **The input gradient of a stride-2 convolution**, which XLA computes on a gradient dilated
  with zeros: :func:`stride2_input_gradient` splits it by parity instead (2-3x faster).
- **BatchNorm's per-channel reductions.** XLA's CPU backend rewrites a reduction over
  batch x height x width into a tree of ``reduce-window`` loops, one pass over the
  activations each (five per BatchNorm, forward and backward: 110 ms of a 500 ms ResNet-20
  step). :class:`BlockSumBatchNorm` computes every per-channel sum in two short stages that
  XLA leaves as plain, fast reductions, and its gradient in closed form
  (:func:`normalize`), three passes over the activations fewer than autodiff's.
- **The gradient of a 2x2 max-pool**, which XLA's CPU backend builds from four input-sized
  index arrays and a scatter (55 ms of a Conv-4 step's first pool): :func:`max_pool_2x2`
  computes it in one elementwise pass (3 ms).
- **Convolutions on maps smaller than their kernel** (VGG's last 2x2 maps), which XLA's CPU
  backend runs as plain loops: :func:`small_map_conv` makes them a matrix product.
- **Recomputation along a residual stream**, which :func:`materialize` stops (ResNet-20
  compiles in half the time).
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

Written for the CPU, they also train faster on a GPU, where the convolutions themselves stay
XLA's (oneDNN's custom call is CPU-only): masked steps/s on an H200
(``benchmarks/conv_gpu.py``) 443 against Flax's layers' 426 for ResNet-20, 1956 against
1706 for Conv-4 (the max-pool gradient), 425 against 385 for VGG-16, 29.5 against 29.0 for
ResNet-50 at 224x224. The network uses them only where :func:`enabled` says so
(``model.kernels``; ``auto`` picks them on a CPU and a GPU, not on a TPU, where they are
unmeasured). Evaluation (``train=False``) uses Flax's layers but for
:func:`small_map_conv`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lottery.kernels import onednn

# Rows summed in the first stage of a per-channel sum (see _sum_channels).
SUM_BLOCK = 32

# None: Flax's layers; "train": every kernel here; "eval": only small_map_conv.
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("cpu_kernels", default=None)


@contextlib.contextmanager
def enabled(on: bool, train: bool = True) -> Iterator[None]:
    """Within the block, layers built (at trace time) by :func:`conv_layer`,
    :func:`batch_norm`, :func:`max_pool` and :func:`materialize` use the CPU kernels if
    ``on``: all of them if ``train``, else (evaluation) only :func:`small_map_conv`, which
    XLA's own convolution would run 50-100x slower; every other evaluation layer is Flax's,
    bit for bit."""
    token = _MODE.set(("train" if train else "eval") if on else None)
    try:
        yield
    finally:
        _MODE.reset(token)


def active() -> bool:
    """Whether layers built now use the CPU training kernels."""
    return _MODE.get() == "train"


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
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated``, but :func:`small_map_conv` on a map smaller than the
    kernel, and :func:`trained_conv` (oneDNN's forward convolution and input gradient,
    :func:`stride2_input_gradient`, :func:`kernel_gradient`) for the rest when the CPU
    kernels are active."""
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
    if active() and plain and default and (
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


def materialize(x: jax.Array) -> jax.Array:
    """``x``, computed once and stored when the CPU kernels are active (else ``x`` itself).

    XLA fuses a cheap elementwise producer into each of its consumers, recomputing it in
    every one. Along a residual stream (``relu(bn(conv(x)) + x)`` block after block) that
    recomputation chains: each block's output fusion recomputes every earlier block's
    BatchNorm, add and ReLU from their convolutions, and so does each transpose feeding a
    kernel gradient. XLA never duplicates an expensive operation such as a division, so
    ``x / 1`` (exact for every float but a denormal, which XLA's CPU arithmetic flushes to
    zero here as in the add before it) stops the chain; the 1 is hidden behind an
    optimization barrier, which XLA's CPU pipeline drops only after its algebraic
    simplifier would have removed a plain ``x / 1``.
    """
    if not active():
        return x
    return x / lax.optimization_barrier(jnp.ones((), x.dtype))


def conv_layer(features: int, kernel_size: Sequence[int], **kwargs: Any) -> nn.Conv:
    """An ``nn.Conv`` (same parameters, same names) whose convolution is
    :func:`cpu_conv` when the CPU kernels are enabled."""
    if _MODE.get() is not None:
        # Flax marks this field deprecated; it is still how a Conv takes its convolution, and
        # a module of our own would have to repeat nn.Conv's padding and shape handling.
        kwargs["conv_general_dilated"] = cpu_conv
    return nn.Conv(features, tuple(kernel_size), **kwargs)


def _windows_2x2(x: jax.Array) -> jax.Array:
    """(N, H, W, C) as (N, H/2, 2, W/2, 2, C): each 2x2 window's rows and columns."""
    n, height, width, channels = x.shape
    return x.reshape(n, height // 2, 2, width // 2, 2, channels)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (2, 2), strides=(2, 2))`` for an NHWC ``x`` of even height and width,
    with the same gradient: each window's output gradient goes to its first maximum (in row
    order), as XLA's ``select_and_scatter`` gives it.

    XLA's CPU backend rewrites that ``select_and_scatter`` into a reduction that carries four
    index arrays the size of the input, built from iotas, and a scatter: about a third of a
    Conv-4 train step. The windows do not overlap, so the gradient is one elementwise pass.
    """
    return jnp.max(_windows_2x2(x), axis=(2, 4))


def _max_pool_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    y = max_pool_2x2(x)
    return y, (x, y)


def _max_pool_backward(residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    x, y = residuals
    windows = _windows_2x2(x)
    taken = jnp.zeros(y.shape, bool)
    rows = []
    for a in range(2):
        cols = []
        for b in range(2):
            first = (windows[:, :, a, :, b] == y) & ~taken
            taken = taken | first
            cols.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
        rows.append(jnp.stack(cols, axis=3))
    return (jnp.stack(rows, axis=2).reshape(x.shape),)


max_pool_2x2.defvjp(_max_pool_forward, _max_pool_backward)


def max_pool(x: jax.Array) -> jax.Array:
    """A 2x2 max-pool of stride 2 (``nn.max_pool(x, (2, 2), strides=(2, 2))``), by
    :func:`max_pool_2x2` when the CPU kernels are active and the map's sides are even."""
    if active() and x.ndim == 4 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
        return max_pool_2x2(x)
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _sum_channels(x: jax.Array) -> jax.Array:
    """The sum over every axis but the last, in two stages: blocks of up to
    :data:`SUM_BLOCK` rows, then the blocks' sums.

    XLA's CPU backend rewrites one long reduction into a slow tree of ``reduce-window``
    loops; a reduction over at most 32 elements it leaves alone, and the second stage is 32
    times smaller. Each stage sums no more than XLA's tree does in one piece, so the result
    is as accurate (a matrix product with a vector of ones, summing in order, was 1e-3 off).
    """
    rows = x.reshape(-1, x.shape[-1])
    block = math.gcd(rows.shape[0], SUM_BLOCK)
    return jnp.sum(jnp.sum(rows.reshape(-1, block, rows.shape[-1]), axis=1), axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def normalize(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    epsilon: float,
) -> jax.Array:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` per channel (channels last), for
    ``mean`` and ``var`` the batch statistics of ``x`` itself, with BatchNorm's closed-form
    gradient: the gradient reaching ``x`` through ``mean`` and ``var`` is included here, so
    the caller computes them from ``lax.stop_gradient(x)``.

    Differentiating the statistics' formula instead costs three more passes over the
    activations per BatchNorm: XLA writes ``x - mean`` and the normalized ``x`` out for the
    backward pass, and sums the variance's gradient in a pass of its own.
    """
    return (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


def _normalize_forward(*args: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    x, scale, _, mean, var, _ = args  # normalize's arguments; bias is not needed backward
    return normalize(*args), (x, scale, mean, var)


def _normalize_backward(
    epsilon: float, residuals: tuple[jax.Array, ...], g: jax.Array
) -> tuple[jax.Array, ...]:
    x, scale, mean, var = residuals
    count = x.size // x.shape[-1]
    rstd = lax.rsqrt(var + epsilon)
    g_sum = _sum_channels(g)
    # sum(g * x_hat) as (sum(g * x) - mean * sum(g)) * rstd: the sum multiplies the two
    # stored arrays directly, where a normalized x would be written out first. The same
    # cancellation as the fast variance E[x^2] - E[x]^2 the statistics use.
    g_xhat_sum = (_sum_channels(g * x) - mean * g_sum) * rstd
    x_hat = (x - mean) * rstd
    dx = (scale * rstd) * (g - g_sum / count - x_hat * (g_xhat_sum / count))
    # mean and var come from lax.stop_gradient(x): their own cotangents are never used.
    return dx, g_xhat_sum, g_sum, jnp.zeros_like(mean), jnp.zeros_like(var)


normalize.defvjp(_normalize_forward, _normalize_backward)


class BlockSumBatchNorm(nn.Module):
    """``nn.BatchNorm`` over the last axis with its defaults (fast variance, statistics and
    parameters in float32), whose per-channel sums run in two stages (:func:`_sum_channels`)
    and whose gradient is the closed form (:func:`normalize`).

    Parameters ``scale`` and ``bias`` and statistics ``mean`` and ``var`` are those of
    ``nn.BatchNorm``, updated the same way: ``m * running + (1 - m) * batch``.
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        out_dtype = jnp.result_type(x, scale, bias)
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(stats_dtype)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
            mul = lax.rsqrt(var + self.epsilon) * scale
            return ((xs - mean) * mul + bias).astype(out_dtype)
        count = x.size // channels
        held = lax.stop_gradient(xs)  # normalize's gradient accounts for the statistics
        mean = _sum_channels(held) / count
        # As Flax's fast variance: E[x^2] - E[x]^2, clipped at 0 against round-off.
        var = jnp.maximum(0.0, _sum_channels(held * held) / count - mean * mean)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return normalize(xs, scale, bias, mean, var, self.epsilon).astype(out_dtype)


def batch_norm(use_running_average: bool, name: str) -> nn.Module:
    """BatchNorm as PyTorch's ``BatchNorm2d`` defaults (momentum 0.1, i.e. Flax's 0.9, and
    epsilon 1e-5); statistics in the ``batch_stats`` collection. Two-stage sums when the CPU
    kernels are enabled and the layer trains."""
    if active() and not use_running_average:
        return BlockSumBatchNorm(use_running_average, momentum=0.9, epsilon=1e-5, name=name)
    return nn.BatchNorm(use_running_average, momentum=0.9, epsilon=1e-5, name=name)
