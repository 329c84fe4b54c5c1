"""The layers a network builds its convolutions, BatchNorms and max-pools from, on the
kernels it was built with: ``"xla"``, Flax's own layers as XLA compiles them, or ``"cpu"``,
training kernels written for XLA's CPU backend that compute the same to float rounding in
less time there.

Each helper takes the choice (``kernels``) and whether the layer trains (``train``) as
arguments: a network's modules hold ``kernels`` as a field, set where the network is built
(``model.kernels``, :func:`lottery.models.build`), and pass it down with ``train``.

Measured on a 2-core CPU with jax 0.10 (``benchmarks/conv_cpu.py``), these are what XLA's
CPU backend does slowly in a train step, and what ``"cpu"`` does instead:

- **Convolutions** (Eigen's forward pass, the input gradient of a stride 2, maps smaller
  than the kernel, depthwise filters, kernel gradients inside a loop):
  :func:`lottery.kernels.convolution.cpu_conv`.
- **BatchNorm's per-channel reductions** (110 ms of a 500 ms ResNet-20 step):
  :class:`lottery.kernels.normalization.BlockSumBatchNorm`.
- **The gradient of a 2x2 max-pool** (55 ms of a Conv-4 step's first pool, against 3 ms):
  :func:`lottery.kernels.pooling.max_pool_2x2`.
- **Recomputation along a residual stream**, which :func:`materialize` stops (ResNet-20
  compiles in half the time).

Written for the CPU, they also train faster on a GPU, where the convolutions themselves stay
XLA's (oneDNN's custom call is CPU-only): masked steps/s on an H200
(``benchmarks/conv_gpu.py``) 443 against Flax's layers' 426 for ResNet-20, 1956 against
1706 for Conv-4 (the max-pool gradient), 425 against 385 for VGG-16, 29.5 against 29.0 for
ResNet-50 at 224x224 (``model.kernels=auto`` picks them on a CPU and a GPU, not on a TPU,
where they are unmeasured). Evaluation (``train=False``) uses Flax's layers but for the
convolutions XLA's CPU backend runs far slower (small maps, depthwise filters).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lottery.kernels.convolution import cpu_conv
from lottery.kernels.normalization import BlockSumBatchNorm
from lottery.kernels.pooling import max_pool_2x2

Kernels = Literal["xla", "cpu"]
CHOICES: tuple[Kernels, ...] = ("xla", "cpu")


def uses_cpu(kernels: Kernels) -> bool:
    """Whether ``kernels`` is ``"cpu"``; ValueError for anything but the two choices (a typo
    would otherwise train with XLA's layers unnoticed)."""
    if kernels not in CHOICES:
        raise ValueError(f"kernels must be one of {', '.join(CHOICES)}, not {kernels!r}")
    return kernels == "cpu"


def conv_layer(
    features: int, kernel_size: Sequence[int], *, kernels: Kernels, train: bool, **kwargs: Any
) -> nn.Conv:
    """An ``nn.Conv`` (same parameters, same names) whose convolution is
    :func:`~lottery.kernels.convolution.cpu_conv` with ``kernels="cpu"``: all of its kernels
    when ``train``, else only those for small maps and depthwise filters."""
    if uses_cpu(kernels):
        # Flax marks this field deprecated; it is still how a Conv takes its convolution, and
        # a module of our own would have to repeat nn.Conv's padding and shape handling.
        kwargs["conv_general_dilated"] = functools.partial(cpu_conv, train=train)
    return nn.Conv(features, tuple(kernel_size), **kwargs)


def batch_norm(name: str, *, kernels: Kernels, train: bool) -> nn.Module:
    """BatchNorm as PyTorch's ``BatchNorm2d`` defaults (momentum 0.1, i.e. Flax's 0.9, and
    epsilon 1e-5), normalising by the batch when ``train`` and by the running statistics
    (collection ``batch_stats``) otherwise. Two-stage sums
    (:class:`~lottery.kernels.normalization.BlockSumBatchNorm`) with ``kernels="cpu"`` when
    it trains."""
    if uses_cpu(kernels) and train:
        return BlockSumBatchNorm(False, momentum=0.9, epsilon=1e-5, name=name)
    return nn.BatchNorm(not train, momentum=0.9, epsilon=1e-5, name=name)


def max_pool(x: jax.Array, *, kernels: Kernels, train: bool) -> jax.Array:
    """A 2x2 max-pool of stride 2 (``nn.max_pool(x, (2, 2), strides=(2, 2))``), by
    :func:`~lottery.kernels.pooling.max_pool_2x2` with ``kernels="cpu"`` when it trains and
    the map's sides are even."""
    even = x.ndim == 4 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0
    if uses_cpu(kernels) and train and even:
        return max_pool_2x2(x)
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def materialize(x: jax.Array, *, kernels: Kernels, train: bool) -> jax.Array:
    """``x``, computed once and stored with ``kernels="cpu"`` when training (else ``x``
    itself).

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
    if not (uses_cpu(kernels) and train):
        return x
    return x / lax.optimization_barrier(jnp.ones((), x.dtype))
