"""The state one training run carries from step to step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """Step counter, parameters, BatchNorm statistics and optimizer state: all pytrees."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState

    @classmethod
    def create(
        cls, step: int, params: Any, batch_stats: Any, tx: optax.GradientTransformation
    ) -> TrainState:
        """A state at ``step`` with a fresh optimizer state (own copies of every array)."""
        params = jax.tree.map(jnp.array, params)
        batch_stats = jax.tree.map(jnp.array, batch_stats)
        return cls(jnp.asarray(step, jnp.int32), params, batch_stats, tx.init(params))
