"""Fully connected networks: general MLPs and LeNet-300-100 (Frankle & Carbin 2019)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """ReLU MLP on flattened inputs; hidden layers ``fc1, fc2, ...``, output layer ``out``."""

    hidden: Sequence[int]
    num_classes: int
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden, start=1):
            x = nn.relu(nn.Dense(width, kernel_init=self.kernel_init, name=f"fc{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)
