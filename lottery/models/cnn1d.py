"""The MNIST-1D convolutional baseline (Greydanus & Kobak 2020, ``ConvBase``).

Three 1-D convolutions with 25 channels, stride 2 and padding 1 (kernels 5, 3 and 3, as in the
reference code), ReLU after each, flattened into the output layer ``out``. On sequences of
length 40 with 10 classes: 40 -> 19 -> 10 -> 5 positions, 5,210 parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

BASE_WIDTH = 25


class CNN1D(nn.Module):
    """Layers ``conv1, conv2, conv3`` and ``out`` on (N, L) or (N, L, C) inputs.

    ``widths``, when given, is each convolution's channels, overriding ``width`` (a
    structured-pruned network compacted by :mod:`lottery.deploy`).
    """

    num_classes: int
    width: int = BASE_WIDTH
    kernel_sizes: Sequence[int] = (5, 3, 3)
    kernel_init: Callable = nn.initializers.lecun_normal()
    widths: Sequence[int] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim == 2:
            x = x[..., None]
        widths = (self.width,) * len(self.kernel_sizes) if self.widths is None else self.widths
        if len(widths) != len(self.kernel_sizes):
            raise ValueError(f"widths {tuple(widths)} must give {len(self.kernel_sizes)} channels")
        for i, (size, features) in enumerate(zip(self.kernel_sizes, widths, strict=True), 1):
            layer = nn.Conv(
                features,
                (size,),
                strides=(2,),
                padding=1,
                kernel_init=self.kernel_init,
                name=f"conv{i}",
            )
            x = nn.relu(layer(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
