"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks"), for ImageNet as torchvision's ``mobilenet_v2()`` and a CIFAR variant.

A 3x3/2 convolution with 32 channels, BatchNorm and ReLU6; the paper's Table 2 of inverted
residual blocks (expansion t, channels c, repeats n, stride s of the first); a 1x1
convolution to 1280 channels with BatchNorm and ReLU6 (``head``); global average pooling and
the output layer ``out``. Each block is a 1x1 expansion to ``t * in`` channels with BatchNorm
and ReLU6 (left out where t = 1, as torchvision does), a 3x3 depthwise convolution
(``feature_group_count`` = its channels) with BatchNorm and ReLU6, and a linear 1x1
projection with BatchNorm (no activation: the linear bottleneck). The repeated blocks of a
stage (stride 1, as many channels in as out) add their input (identity shortcut); a stage's
first block changes the shape and has none. Convolutions have no bias. With 1000 classes at
width multiplier 1.0: 3,504,872 parameters, torchvision's count.

Deliberate differences from torchvision: no dropout before ``out`` (the package's other
networks have none; torchvision's classifier drops 20%), and kernels drawn by ``model.init``
as in the rest of the zoo (torchvision: Kaiming normal fan-out, ``out`` from N(0, 0.01)).
Where a tiny width multiplier rounds a stage's channels to those of the stage before and its
first block has stride 1, torchvision adds an identity shortcut there; here a stage's first
block never has one, so which blocks are residual is the same at every width (and can be read
from the parameter names by :mod:`lottery.pruning.structured`). At the paper's widths
(0.35-1.4) the two agree.

The CIFAR variant (``mobilenetv2_cifar``, 32x32 inputs) follows kuangliu/pytorch-cifar's
``MobileNetV2``: the first convolution and the second stage (c = 24) have stride 1, so the
last stage sees 4x4 maps. Unlike that port it keeps the paper's block (no expansion
convolution where t = 1, ReLU6, no projection shortcut on stride-1 blocks that change the
channels: kuangliu adds a 1x1 convolution there, which is not the paper's design).

Widths scale with ``width_multiplier`` rounded by :func:`make_divisible` (``head``: times
``max(1, multiplier)``), as torchvision. ``widths`` (optional) gives every non-depthwise
convolution's channels explicitly (the stem, then each block's expansion where it has one
and its projection, then ``head_conv``), for a structured-pruned network compacted by
:mod:`lottery.deploy`; a depthwise convolution has as many channels as its input.
``removed`` leaves blocks out (whole blocks pruned by ``pruning.method=blocks``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lottery.kernels.layers import Kernels, batch_norm, conv_layer, materialize
from lottery.models.resnet_cifar import conv

# The paper's Table 2: (expansion t, output channels c, repeats n, stride s of the first).
IMAGENET_PLAN: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# kuangliu/pytorch-cifar: the second stage's stride 2 -> 1 (and the stem's, see STEM_STRIDE).
CIFAR_PLAN = tuple((t, c, n, 1 if i == 1 else s) for i, (t, c, n, s) in enumerate(IMAGENET_PLAN))
STEM_STRIDE = {"imagenet": 2, "cifar": 1}
STEM_CHANNELS, HEAD_CHANNELS, DIVISOR = 32, 1280, 8


def make_divisible(value: float, divisor: int = DIVISOR) -> int:
    """torchvision's ``_make_divisible``: ``value`` rounded to the nearest multiple of
    ``divisor`` (at least ``divisor``), never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def relu6(x: jax.Array, *, kernels: Kernels, train: bool) -> jax.Array:
    return materialize(jnp.minimum(nn.relu(x), 6.0), kernels=kernels, train=train)


def depthwise(
    stride: int, kernel_init: Callable, name: str, channels: int, *, kernels: Kernels, train: bool
) -> nn.Conv:
    """A bias-free 3x3 depthwise convolution (one filter per channel), padded by 1."""
    return conv_layer(
        channels,
        (3, 3),
        strides=(stride, stride),
        padding=1,
        feature_group_count=channels,
        use_bias=False,
        kernel_init=kernel_init,
        name=name,
        kernels=kernels,
        train=train,
    )


class InvertedResidual(nn.Module):
    """Layers ``expand_conv``/``expand_bn`` (where ``expansion`` > 1), ``depthwise_conv``/
    ``depthwise_bn`` and ``project_conv``/``project_bn``; ``residual``: add the input.

    ``widths``: the channels of the expansion (where there is one) and the projection;
    ``kernels``: the layers' kernels (:mod:`lottery.kernels.layers`).
    """

    expansion: int
    features: int
    stride: int
    residual: bool
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        on = {"kernels": self.kernels, "train": train}  # the layers' kernels, and train or eval
        expands = self.expansion != 1
        if self.widths is not None:
            *inner, out = self.widths
        else:
            inner, out = [round(x.shape[-1] * self.expansion)] if expands else [], self.features
        y = x
        if expands:
            y = conv(inner[0], 1, 1, self.kernel_init, "expand_conv", **on)(y)
            y = relu6(batch_norm("expand_bn", **on)(y), **on)
        y = depthwise(self.stride, self.kernel_init, "depthwise_conv", y.shape[-1], **on)(y)
        y = relu6(batch_norm("depthwise_bn", **on)(y), **on)
        y = conv(out, 1, 1, self.kernel_init, "project_conv", **on)(y)
        y = batch_norm("project_bn", **on)(y)
        return materialize(y + x, **on) if self.residual else y


def _split_widths(
    widths: Sequence[int] | None, expands: Sequence[bool]
) -> tuple[int | None, list[tuple[int, ...] | None], int | None]:
    """Explicit ``widths`` as the stem's, each block's (expansion if any, projection) and
    the head's; Nones without them."""
    if widths is None:
        return None, [None] * len(expands), None
    needed = 2 + sum(2 if e else 1 for e in expands)
    if len(widths) != needed:
        raise ValueError(f"widths must give {needed} convolutions' channels, not {len(widths)}")
    per_block, start = [], 1
    for e in expands:
        count = 2 if e else 1
        per_block.append(tuple(widths[start : start + count]))
        start += count
    return widths[0], per_block, widths[-1]


class MobileNetV2(nn.Module):
    """Layers ``stem_conv``, ``stem_bn``, blocks ``block{stage}_{index}`` (from 1; a stage is
    a row of the plan), ``head_conv``, ``head_bn`` and ``out``.

    ``plan``: rows (t, c, n, s); ``stem_stride``: 2 for ImageNet, 1 for CIFAR. ``widths``:
    see the module docstring. ``kernels``: the layers' kernels (:mod:`lottery.kernels.layers`).
    """

    num_classes: int
    plan: Sequence[tuple[int, int, int, int]] = IMAGENET_PLAN
    stem_stride: int = 2
    width_multiplier: float = 1.0
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None
    # Blocks left out (identity-shortcut blocks removed whole by pruning.method=blocks).
    removed: Sequence[str] = ()
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        on = {"kernels": self.kernels, "train": train}  # the layers' kernels, and train or eval
        blocks = [
            (f"block{stage + 1}_{index + 1}", t != 1)
            for stage, (t, _, n, _) in enumerate(self.plan)
            for index in range(n)
            if f"block{stage + 1}_{index + 1}" not in self.removed
        ]
        stem, kept_widths, head = _split_widths(self.widths, [e for _, e in blocks])
        block_widths = dict(zip([name for name, _ in blocks], kept_widths, strict=True))
        multiplier = self.width_multiplier
        stem = stem or make_divisible(STEM_CHANNELS * multiplier)
        x = conv(stem, 3, self.stem_stride, self.kernel_init, "stem_conv", **on)(x)
        x = relu6(batch_norm("stem_bn", **on)(x), **on)
        for stage, (t, c, n, s) in enumerate(self.plan):
            for index in range(n):
                name = f"block{stage + 1}_{index + 1}"
                if name in self.removed:  # an identity block: its output was its input
                    continue
                block = InvertedResidual(
                    t,
                    make_divisible(c * multiplier),
                    s if index == 0 else 1,
                    residual=index > 0,
                    kernel_init=self.kernel_init,
                    widths=block_widths[name],
                    kernels=self.kernels,
                    name=name,
                )
                x = block(x, train)
        head = head or make_divisible(HEAD_CHANNELS * max(1.0, multiplier))
        x = conv(head, 1, 1, self.kernel_init, "head_conv", **on)(x)
        x = relu6(batch_norm("head_bn", **on)(x), **on)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
