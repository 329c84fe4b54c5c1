"""Training kernels for XLA's CPU backend: a convolution and a BatchNorm that compute what
Flax's ``nn.Conv`` and ``nn.BatchNorm`` compute, to float rounding, in less time there.

Measured on a 2-core CPU with jax 0.10 (``benchmarks/conv_cpu.py``), two things cost most of a
ResNet-20 train step besides the convolutions themselves:

- **The weight gradient of a convolution.** XLA computes it as one convolution contracting
  the whole batch, whose operands it first transposes (batch innermost); for a 32x32 map
  that transpose and the convolution run out of cache. Computed over chunks of
  :data:`CHUNK` examples and summed (:func:`batch_chunked_conv`), each chunk fits in cache:
  the weight gradients of ResNet-20's first stage take about half the time.
- **BatchNorm's per-channel reductions.** XLA's CPU backend rewrites a reduction over
  batch x height x width into a tree of ``reduce-window`` loops, one pass over the
  activations each (five per BatchNorm, forward and backward: 110 ms of a 500 ms ResNet-20
  step). :class:`BlockSumBatchNorm` computes every per-channel sum, and the gradient of every
  per-channel broadcast, in two short stages that XLA leaves as plain, fast reductions.

Neither helps on a GPU, where XLA's own convolutions and reductions are the fast path, so
the network uses them only where :func:`enabled` says so (``model.kernels``; ``auto`` picks
them on a CPU). The forward convolution and the gradient of its input are XLA's own either
way, and evaluation (``train=False``) always uses Flax's layers.
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

# Examples per chunk of the weight gradient: 8 and 16 were fastest for ResNet-20's and
# Conv-4's layers at batch 60-128 (32 and more lose the cache, 4 too small a product).
CHUNK = 16

# Rows summed in the first stage of a per-channel sum (see _sum_channels).
SUM_BLOCK = 32

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("cpu_kernels", default=False)


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Within the block, layers built by :func:`conv_layer` and :func:`batch_norm` (at trace
    time) use the CPU kernels if ``on``."""
    token = _ENABLED.set(on)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def active() -> bool:
    """Whether layers built now use the CPU kernels."""
    return _ENABLED.get()


def batch_chunked_conv(
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
    """``lax.conv_general_dilated``, whose kernel gradient sums the gradients of batch chunks
    of :data:`CHUNK` examples instead of contracting the whole batch at once."""
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
    batch_axis = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers).lhs_spec[0]
    batch = lhs.shape[batch_axis]
    chunks = max(1, round(batch / CHUNK))
    if chunks == 1 or feature_group_count != 1:
        return conv(lhs, rhs)

    @jax.custom_vjp
    def chunked(x: jax.Array, w: jax.Array) -> jax.Array:
        return conv(x, w)

    def forward(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return conv(x, w), (x, w)

    def backward(residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[Any, Any]:
        x, w = residuals
        dx = jax.vjp(lambda x: conv(x, w), x)[1](g)[0]
        dw = None
        for i in range(chunks):
            start, stop = i * batch // chunks, (i + 1) * batch // chunks
            x_part = lax.slice_in_dim(x, start, stop, axis=batch_axis)
            g_part = lax.slice_in_dim(g, start, stop, axis=batch_axis)
            part = jax.vjp(lambda w, x_part=x_part: conv(x_part, w), w)[1](g_part)[0]
            dw = part if dw is None else dw + part
        return dx, dw

    chunked.defvjp(forward, backward)
    return chunked(lhs, rhs)


def conv_layer(features: int, kernel_size: Sequence[int], **kwargs: Any) -> nn.Conv:
    """An ``nn.Conv`` (same parameters, same names), with the chunked kernel gradient when the
    CPU kernels are enabled."""
    if active():
        # Flax marks this field deprecated; it is still how a Conv takes its convolution, and
        # a module of our own would have to repeat nn.Conv's padding and shape handling.
        kwargs["conv_general_dilated"] = batch_chunked_conv
    return nn.Conv(features, tuple(kernel_size), **kwargs)


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


@jax.custom_vjp
def channel_sum(x: jax.Array) -> jax.Array:
    """Per-channel sum of ``x`` (channels last) in two stages; its gradient is a broadcast."""
    return _sum_channels(x)


channel_sum.defvjp(
    lambda x: (_sum_channels(x), x.shape),
    lambda shape, g: (jnp.broadcast_to(g, shape),),
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_channels(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``v`` (one value per channel) broadcast to ``shape``; its gradient is the two-stage
    per-channel sum instead of XLA's (rewritten) reduction."""
    return jnp.broadcast_to(v, shape)


broadcast_channels.defvjp(
    lambda v, shape: (jnp.broadcast_to(v, shape), None),
    lambda shape, _, g: (_sum_channels(g),),
)


class BlockSumBatchNorm(nn.Module):
    """``nn.BatchNorm`` over the last axis with its defaults (fast variance, statistics and
    parameters in float32), whose per-channel sums run in two stages (:func:`channel_sum`).

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
        else:
            count = x.size // channels
            mean = channel_sum(xs) / count
            # As Flax's fast variance: E[x^2] - E[x]^2, clipped at 0 against round-off.
            var = jnp.maximum(0.0, channel_sum(xs * xs) / count - mean * mean)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        mul = lax.rsqrt(var + self.epsilon) * scale
        y = (xs - broadcast_channels(mean, xs.shape)) * broadcast_channels(mul, xs.shape)
        return (y + broadcast_channels(bias, xs.shape)).astype(out_dtype)


def batch_norm(use_running_average: bool, name: str) -> nn.Module:
    """BatchNorm as PyTorch's ``BatchNorm2d`` defaults (momentum 0.1, i.e. Flax's 0.9, and
    epsilon 1e-5); statistics in the ``batch_stats`` collection. Two-stage sums when the CPU
    kernels are enabled and the layer trains."""
    if active() and not use_running_average:
        return BlockSumBatchNorm(use_running_average, momentum=0.9, epsilon=1e-5, name=name)
    return nn.BatchNorm(use_running_average, momentum=0.9, epsilon=1e-5, name=name)
