"""VGG-11/13/16/19 with BatchNorm for CIFAR-10, as OpenLTH's ``cifar_vgg_N``.

Each convolution is 3x3 (padding 1) + BatchNorm + ReLU; "M" is a 2x2 max-pool. After the last
convolution the 2x2 feature map is average-pooled and a single layer ``out`` classifies.
The convolutions keep their bias, as OpenLTH's do, so the counts match its tests exactly:
VGG-11 9,231,114, VGG-13 9,416,010, VGG-16 14,728,266, VGG-19 20,040,522 parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from lottery.kernels.layers import Kernels, batch_norm, conv_layer, max_pool
from lottery.models.conv import conv_widths

BASE_WIDTH = 64

PLANS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512),
    ),
}


class VGG(nn.Module):
    """Layers ``conv1, bn1, conv2, bn2, ...`` and ``out``.

    ``width`` is the channels of the first convolution (the paper's 64); the others scale with it.
    ``widths``, when given, is every convolution's channels in order, overriding ``plan`` and
    ``width`` (a structured-pruned network compacted by :mod:`lottery.deploy`).
    ``kernels``: the layers' kernels (:mod:`lottery.kernels.layers`).
    """

    plan: Sequence[int | str]
    num_classes: int
    width: int = BASE_WIDTH
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None
    kernels: Kernels = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        widths = conv_widths(self.plan, self.width, BASE_WIDTH, self.widths)
        i = 0
        for spec in self.plan:
            if spec == "M":
                x = max_pool(x, kernels=self.kernels, train=train)
                continue
            features = widths[i]
            i += 1
            conv = conv_layer(
                features, (3, 3), padding=1, kernel_init=self.kernel_init, name=f"conv{i}",
                kernels=self.kernels, train=train,
            )
            x = conv(x)
            x = nn.relu(batch_norm(f"bn{i}", kernels=self.kernels, train=train)(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
