"""ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks) for ImageNet, as torchvision's.

A 7x7/2 convolution with 64 channels, BatchNorm, ReLU and a 3x3/2 max-pool; four stages of
blocks with 64, 128, 256 and 512 channels (times 4 at the output of bottlenecks), stages 2-4
starting with stride 2; global average pooling and the output layer ``out``. ResNet-50 puts
the stride on its 3x3 convolution (torchvision's "v1.5"). Shortcuts are a strided 1x1
convolution and BatchNorm where the shape changes. With 1000 classes: ResNet-18 11,689,512,
ResNet-34 21,797,672, ResNet-50 25,557,032 parameters.

``widths`` (optional) gives every convolution's channels explicitly, as in
:mod:`lottery.models.resnet_cifar`, for a compacted structured-pruned network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lottery.kernels.layers import Kernels, batch_norm, materialize
from lottery.models.resnet_cifar import BasicBlock, block_widths, conv, shortcut

BASE_WIDTH = 64

# Blocks per stage, and whether they are bottlenecks.
PLANS: dict[int, tuple[tuple[int, ...], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
}


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided) and 1x1 convolutions with BatchNorm; ``4 * features`` channels out.

    ``widths``: the channels of ``conv1``, ``conv2`` and ``conv3`` where they differ from the
    nominal ones; ``projection``: whether the shortcut is a convolution (None: where the shape
    changes); ``kernels``: the layers' kernels (:mod:`lottery.kernels.layers`).
    """

    features: int
    stride: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()
    expansion: int = 4
    widths: Sequence[int] | None = None
    projection: bool | None = None
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        on = {"kernels": self.kernels, "train": train}  # the layers' kernels, and train or eval
        nominal = (self.features, self.features, self.features * self.expansion)
        first, second, out = nominal if self.widths is None else self.widths
        y = conv(first, 1, 1, self.kernel_init, "conv1", **on)(x)
        y = materialize(nn.relu(batch_norm("bn1", **on)(y)), **on)
        y = conv(second, 3, self.stride, self.kernel_init, "conv2", **on)(y)
        y = materialize(nn.relu(batch_norm("bn2", **on)(y)), **on)
        y = conv(out, 1, 1, self.kernel_init, "conv3", **on)(y)
        y = batch_norm("bn3", **on)(y)
        skip = shortcut(
            x, out, self.stride, self.kernel_init, train, self.projection, kernels=self.kernels
        )
        return materialize(nn.relu(y + skip), **on)


class ImageNetResNet(nn.Module):
    """Layers ``stem_conv``, ``stem_bn``, blocks ``block{stage}_{index}`` (from 1) and ``out``.

    ``width`` is the channels of the first stage (64); the others scale with it. ``widths``:
    the channels of ``stem_conv`` and then of every block's convolutions, in order, where they
    differ from the nominal ones. ``kernels``: the layers' kernels
    (:mod:`lottery.kernels.layers`).
    """

    stages: Sequence[int]
    bottleneck: bool
    num_classes: int
    width: int = BASE_WIDTH
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None
    # Blocks left out (identity-shortcut blocks removed whole by pruning.method=blocks).
    removed: Sequence[str] = ()
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        convs, expansion = (3, 4) if self.bottleneck else (2, 1)
        names = [f"block{s + 1}_{i + 1}" for s, n in enumerate(self.stages) for i in range(n)]
        kept = [name for name in names if name not in self.removed]
        stem, kept_widths = block_widths(self.widths, self.width, [convs] * len(kept))
        widths = dict(zip(kept, kept_widths, strict=True))
        on = {"kernels": self.kernels, "train": train}  # the layers' kernels, and train or eval
        x = conv(stem, 7, 2, self.kernel_init, "stem_conv", **on)(x)
        x = nn.relu(batch_norm("stem_bn", **on)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block_type = Bottleneck if self.bottleneck else BasicBlock
        channels = self.width  # nominal channels decide the projections
        for stage, blocks in enumerate(self.stages):
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                features = self.width * 2**stage
                name = f"block{stage + 1}_{index + 1}"
                if name in self.removed:  # an identity block: its output was its input
                    continue
                block = block_type(
                    features,
                    stride,
                    self.kernel_init,
                    widths=widths[name],
                    projection=stride != 1 or channels != features * expansion,
                    kernels=self.kernels,
                    name=name,
                )
                x = block(x, train)
                channels = features * expansion
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
