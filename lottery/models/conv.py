"""Conv-2, Conv-4 and Conv-6 (Frankle & Carbin 2019, Figure 2): VGG-like networks for CIFAR-10.

3x3 convolutions (padding 1, with bias) and ReLU, a 2x2 max-pool after each pair, then fully
connected layers 256, 256 and the output layer ``out``; no BatchNorm. On 32x32x3 inputs with
10 classes: Conv-2 4,301,642, Conv-4 2,425,930, Conv-6 2,262,602 parameters. (The paper's
table gives 1.7M for Conv-6, but also 1.1M for its convolutions, which is what these are:
1,145,408; the 4096-256-256-10 classifier alone holds 1.1M more.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from lottery.kernels.layers import Kernels, conv_layer, max_pool

BASE_WIDTH = 64

# Output channels of each convolution; "M" is a 2x2 max-pool.
PLANS: dict[int, tuple[int | str, ...]] = {
    2: (64, 64, "M"),
    4: (64, 64, "M", 128, 128, "M"),
    6: (64, 64, "M", 128, 128, "M", 256, 256, "M"),
}


def conv_widths(
    plan: Sequence[int | str], width: int, base: int, widths: Sequence[int] | None
) -> tuple[int, ...]:
    """Each convolution's channels: ``widths`` if given, else the plan's scaled to ``width``."""
    nominal = tuple(int(spec) * width // base for spec in plan if spec != "M")
    if widths is None:
        return nominal
    if len(widths) != len(nominal):
        raise ValueError(f"widths {tuple(widths)} must give {len(nominal)} convolutions' channels")
    return tuple(widths)


class ConvNet(nn.Module):
    """Convolutions ``conv1, conv2, ...``, dense layers ``fc1, fc2, ...`` and ``out``.

    ``width`` is the channels of the first convolutions (the paper's 64); the others scale with it.
    ``widths``, when given, is every convolution's channels in order, overriding ``plan`` and
    ``width`` (a structured-pruned network compacted by :mod:`lottery.deploy`).
    ``kernels``: the convolutions' and max-pools' kernels (:mod:`lottery.kernels.layers`).
    """

    plan: Sequence[int | str]
    num_classes: int
    width: int = BASE_WIDTH
    hidden: Sequence[int] = (256, 256)
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
            x = nn.relu(conv(x))
        x = x.reshape((x.shape[0], -1))
        for j, features in enumerate(self.hidden, start=1):
            x = nn.relu(nn.Dense(features, kernel_init=self.kernel_init, name=f"fc{j}")(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
