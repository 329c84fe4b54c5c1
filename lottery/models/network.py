"""A Flax module together with how to initialise and apply it, BatchNorm statistics included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lottery.kernels import cpu_kernels

Params = Any  # a nested dict of arrays
BatchStats = Any  # a nested dict of arrays, empty for models without BatchNorm


@dataclass(frozen=True)
class Network:
    """Wraps a Linen module whose ``__call__(x, train)`` returns logits (a model of one's own
    without ``train`` is wrapped in :class:`lottery.models.user.CalledWithoutTrain`).

    Parameters and BatchNorm statistics are plain pytrees (nested dicts), so masks, rewinding
    and interpolation are pytree operations.
    """

    module: nn.Module
    input_shape: tuple[int, ...]
    # Redraws some parameters after the module's own initialisation (see init.py).
    reinit: Callable[[jax.Array, Params], Params] | None = None
    # Train with lottery.kernels.cpu_kernels (equal results to float rounding; faster on a CPU
    # and on a GPU).
    cpu_kernels: bool = False

    def init(self, key: jax.Array) -> tuple[Params, BatchStats]:
        """Fresh parameters and BatchNorm statistics (``{}`` when there is none)."""
        # Flax's lazy_init: the variables' initialisers run as in ``init`` (the same numbers,
        # tested), but the forward pass that ``init`` also runs, compiling each layer's
        # operations one by one (a second or more of start-up for a conv net), is left out.
        dummy = jax.ShapeDtypeStruct((1, *self.input_shape), jnp.float32)
        variables = self.module.lazy_init(key, dummy, train=False)
        params = dict(variables["params"])
        if self.reinit is not None:
            # Its own stream, so the kernels are the same with or without it.
            params = self.reinit(jax.random.fold_in(key, 7), params)
        return params, dict(variables.get("batch_stats", {}))

    def apply(
        self, params: Params, batch_stats: BatchStats, x: jax.Array, train: bool
    ) -> tuple[jax.Array, BatchStats]:
        """Logits, and the BatchNorm statistics updated by this batch when ``train``."""
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        with cpu_kernels.enabled(self.cpu_kernels, train):
            if train and batch_stats:
                logits, updates = self.module.apply(
                    variables, x, train=True, mutable=["batch_stats"]
                )
                return logits, updates["batch_stats"]
            return self.module.apply(variables, x, train=train), batch_stats
