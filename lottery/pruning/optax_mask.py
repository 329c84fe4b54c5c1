"""The pieces of a lottery run for a training loop of one's own: :func:`prune` a mask and
keep pruned weights at exactly +0.0 under any optax optimizer with :func:`masked`.

``masked`` does what the framework's own train step does (:mod:`lottery.train.steps`): the
gradients of pruned weights are zeroed before the optimizer sees them, so moments that
start at zero (Adam's, momentum's) stay exactly zero there, and each pruned weight's update
is ``-w``, so ``optax.apply_updates`` leaves it at ``w + (-w) = +0.0`` (positive zero, for
any finite ``w``, whatever the optimizer computed).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lottery.config import ConfigError
from lottery.pruning.magnitude import criterion_scores, magnitude_prune
from lottery.pruning.mask import Mask, apply_mask, prunable_paths

PRUNE_METHODS = ("magnitude", "random")
PRUNE_SCOPES = ("global", "layerwise")
DEFAULT_PRUNABLE = r".*kernel"  # PruningConfig.prunable's default: Dense and Conv kernels


class MaskedState(NamedTuple):
    """The wrapped optimizer's state (the mask is fixed when the optimizer is made)."""

    inner: optax.OptState


def masked(optimizer: optax.GradientTransformation, mask: Mask) -> optax.GradientTransformation:
    """``optimizer`` that never moves a weight ``mask`` prunes (False = pruned).

    After ``optax.apply_updates(params, updates)`` every pruned weight is exactly +0.0 and
    the optimizer's moments there stay exactly 0: the gradients (and the parameters the
    optimizer sees, for weight decay) are masked before ``optimizer.update``. ``mask`` has
    the params' tree structure, as :func:`prune` returns it; for a new mask, make a new
    optimizer with a fresh state (``masked(optimizer, new_mask).init(params)``).
    """

    def init(params: Any) -> MaskedState:
        return MaskedState(optimizer.init(apply_mask(params, mask)))

    def update(
        updates: Any, state: MaskedState, params: Any | None = None
    ) -> tuple[Any, MaskedState]:
        if params is None:
            raise ValueError("lottery.pruning.masked needs the params: tx.update(g, state, params)")
        visible = apply_mask(params, mask)
        inner_updates, inner = optimizer.update(apply_mask(updates, mask), state.inner, visible)
        return _zeroing_updates(inner_updates, params, mask), MaskedState(inner)

    return optax.GradientTransformation(init, update)


def _zeroing_updates(updates: Any, params: Any, mask: Mask) -> Any:
    """The updates of alive weights as they are; ``-w`` for each pruned weight ``w``."""
    return jax.tree.map(lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype), updates, params, mask)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name}={value!r} for prune; choose one of {', '.join(choices)}")


def prune(
    params: Any,
    mask: Mask,
    method: str = "magnitude",
    fraction: float = 0.2,
    scope: str = "global",
    prunable: str = DEFAULT_PRUNABLE,
    key: jax.Array | None = None,
) -> Mask:
    """The next mask: ``mask`` with exactly ``round(fraction * n)`` of its ``n`` alive
    prunable weights removed (half rounds up), as one level of the command line's pruning.

    ``method="magnitude"``: the smallest ``|w|`` go (``pruning.method=magnitude``; ties go
    to the earlier weight). ``method="random"``: uniformly random alive weights go
    (``key``, a ``jax.random.key``, chooses them). ``scope="global"`` ranks all prunable
    weights together, ``"layerwise"`` removes the fraction from each layer. ``prunable``
    is a regex matched in full against paths like ``Dense_0/kernel`` (the command line's
    ``pruning.prunable``); other leaves stay all True. Returns a new mask of numpy bools.
    """
    _check_choice("method", method, PRUNE_METHODS)
    _check_choice("scope", scope, PRUNE_SCOPES)
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(
            f"fraction={fraction} must be in [0, 1): the share of the alive weights removed"
        )
    paths = prunable_paths(params, prunable)
    if method == "random":
        if key is None:
            raise ConfigError("method='random' needs key=jax.random.key(SEED) to choose weights")
        from lottery.pruning.at_init import random_scores

        scores = random_scores(params, paths, key)
    else:
        scores = criterion_scores("magnitude", params)
    mask = jax.tree.map(lambda m: np.asarray(m, dtype=bool), mask)
    return magnitude_prune(params, mask, paths, scope, fraction, {}, scores)
