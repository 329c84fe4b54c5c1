"""ResNet-20/32/56/110 for CIFAR-10 (He et al. 2016), as OpenLTH's ``cifar_resnet_N[_W]``.

A 3x3 convolution with W channels, BatchNorm and ReLU; three stages of (N - 2) / 6 basic
blocks with W, 2W and 4W channels, the second and third starting with stride 2; global
average pooling and the output layer ``out``. Where a block changes the shape, its shortcut is
a strided 1x1 convolution and BatchNorm (OpenLTH's choice, not the paper's option A).
Convolutions followed by BatchNorm have no bias. ResNet-20 (W = 16): 272,474 parameters.

``widths`` (optional) gives every convolution's channels explicitly, for a structured-pruned
network compacted by :mod:`lottery.deploy`; which blocks have a projection shortcut still
follows the nominal design, so the parameter names stay those of the full network.
``removed`` leaves blocks out (whole blocks pruned by ``pruning.method=blocks``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lottery.kernels.layers import Kernels, batch_norm, conv_layer, materialize

BASE_WIDTH = 16


def conv(
    features: int,
    size: int,
    stride: int,
    kernel_init: Callable,
    name: str,
    *,
    kernels: Kernels,
    train: bool,
) -> nn.Conv:
    """A bias-free ``size`` x ``size`` convolution padded as PyTorch's ``padding=size // 2``,
    on ``kernels`` (:func:`lottery.kernels.layers.conv_layer`)."""
    return conv_layer(
        features,
        (size, size),
        strides=(stride, stride),
        padding=size // 2,
        use_bias=False,
        kernel_init=kernel_init,
        name=name,
        kernels=kernels,
        train=train,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm around a residual connection (``conv1``, ``conv2``).

    ``widths``: the channels of ``conv1`` and ``conv2`` where they are not both ``features``;
    ``projection``: whether the shortcut is a convolution (None: where the shape changes);
    ``kernels``: the layers' kernels (:mod:`lottery.kernels.layers`).
    """

    features: int
    stride: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None
    projection: bool | None = None
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        on = {"kernels": self.kernels, "train": train}  # the layers' kernels, and train or eval
        inner, out = (self.features, self.features) if self.widths is None else self.widths
        y = conv(inner, 3, self.stride, self.kernel_init, "conv1", **on)(x)
        y = materialize(nn.relu(batch_norm("bn1", **on)(y)), **on)
        y = conv(out, 3, 1, self.kernel_init, "conv2", **on)(y)
        y = batch_norm("bn2", **on)(y)
        skip = shortcut(
            x, out, self.stride, self.kernel_init, train, self.projection, kernels=self.kernels
        )
        return materialize(nn.relu(y + skip), **on)


def shortcut(
    x: jax.Array,
    features: int,
    stride: int,
    kernel_init: Callable,
    train: bool,
    projection: bool | None = None,
    *,
    kernels: Kernels,
) -> jax.Array:
    """``x``, or a strided 1x1 convolution and BatchNorm of it where the shape changes
    (or where ``projection`` says so, when it is given), on ``kernels``.

    Call inside a compact module: the layers are ``shortcut_conv`` and ``shortcut_bn`` of it.
    """
    if projection is None:
        projection = stride != 1 or x.shape[-1] != features
    if not projection:
        return x
    x = conv(features, 1, stride, kernel_init, "shortcut_conv", kernels=kernels, train=train)(x)
    return batch_norm("shortcut_bn", kernels=kernels, train=train)(x)


def block_widths(
    widths: Sequence[int] | None, stem: int, blocks: Sequence[int]
) -> tuple[int, tuple[tuple[int, ...] | None, ...]]:
    """Split explicit ``widths`` (stem, then every block's convolutions in order) into the
    stem's channels and each block's; ``blocks`` is how many convolutions each block has.

    Without ``widths``: the nominal ``stem`` and None for every block (its own default).
    """
    if widths is None:
        return stem, (None,) * len(blocks)
    if len(widths) != 1 + sum(blocks):
        raise ValueError(f"widths must give {1 + sum(blocks)} convolutions' channels")
    per_block, start = [], 1
    for count in blocks:
        per_block.append(tuple(widths[start : start + count]))
        start += count
    return widths[0], tuple(per_block)


class CifarResNet(nn.Module):
    """Layers ``stem_conv``, ``stem_bn``, blocks ``block{stage}_{index}`` (from 1) and ``out``.

    ``widths``: the channels of ``stem_conv`` and then of every block's ``conv1`` and ``conv2``,
    in order, where they differ from the nominal ones (see the module docstring).
    ``kernels``: the layers' kernels (:mod:`lottery.kernels.layers`).
    """

    depth: int
    num_classes: int
    width: int = BASE_WIDTH
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None
    # Blocks left out (identity-shortcut blocks removed whole by pruning.method=blocks).
    removed: Sequence[str] = ()
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, not {self.depth}")
        blocks = (self.depth - 2) // 6
        names = [f"block{s + 1}_{i + 1}" for s in range(3) for i in range(blocks)]
        kept = [name for name in names if name not in self.removed]
        stem, kept_widths = block_widths(self.widths, self.width, [2] * len(kept))
        widths = dict(zip(kept, kept_widths, strict=True))
        on = {"kernels": self.kernels, "train": train}  # the layers' kernels, and train or eval
        x = conv(stem, 3, 1, self.kernel_init, "stem_conv", **on)(x)
        x = materialize(nn.relu(batch_norm("stem_bn", **on)(x)), **on)
        channels = self.width  # nominal, which decides the projection shortcuts
        for stage in range(3):
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                features = self.width * 2**stage
                name = f"block{stage + 1}_{index + 1}"
                if name in self.removed:  # an identity block: its output was its input
                    continue
                block = BasicBlock(
                    features,
                    stride,
                    self.kernel_init,
                    widths=widths[name],
                    projection=stride != 1 or channels != features,
                    kernels=self.kernels,
                    name=name,
                )
                x = block(x, train)
                channels = features
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
