"""``pruning.method=set``: Sparse Evolutionary Training (Mocanu et al. 2018), one level of
dynamic sparse training at a fixed sparsity.

At the rewind step (the level's first) each prunable layer gets a random mask at density
``1 - pruning.final_sparsity`` (or its Erdős–Rényi-Kernel share, ``pruning.distribution=erk``).
Then, at every multiple of ``pruning.frequency`` before ``pruning.end_step``, each layer drops
the ``round(f(t) · n)`` of its ``n`` alive weights of smallest magnitude and regrows as many
at random among the positions it had pruned before the update, where ``f(t)`` is RigL's
cosine decay of ``pruning.drop_fraction``: ``drop_fraction · (1 + cos(π t / end_step)) / 2``.
Each layer's count of alive weights stays exactly what its first mask gave it.

Regrown weights start at exactly 0.0 (they were pruned), and :class:`UpdateMask` zeroes
their optimizer moments. The update is a pure function of (weights, mask, step): its random
choices come from a generator seeded by the step, the layer and a digest of the layer's
weights (the run's seed, through them), so a resumed run draws the same.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import (
    PruneInputs,
    Strategy,
    Timeline,
    check_one_training,
    update_frequency,
)
from lottery.pruning.erk import check_distribution, erk_keeps
from lottery.pruning.magnitude import prune_count
from lottery.pruning.mask import Mask, flatten, unflatten

KEYS = frozenset({"final_sparsity", "end_step", "frequency", "drop_fraction", "distribution"})


@dataclass(frozen=True)
class DynamicSparse:
    """The checked settings of a dynamic sparse method (``set``, ``rigl``)."""

    sparsity: float
    distribution: str
    drop_fraction: float
    frequency: int  # iterations between updates
    end: int  # the updates are before this step

    def fraction_at(self, step: int) -> float:
        """RigL's cosine decay of the drop fraction at ``step``."""
        return self.drop_fraction * (1 + math.cos(math.pi * min(step, self.end) / self.end)) / 2

    def update_steps(self, start: int, end: int) -> list[int]:
        """The level's first step (its initial mask), then every multiple of the frequency
        after it before ``self.end`` (where the fraction reaches 0), within ``[start, end)``."""
        later = range((start // self.frequency + 1) * self.frequency, self.end, self.frequency)
        return [s for s in [start, *later] if s < end]


def settings(cfg: PruningConfig, timeline: Timeline | None) -> DynamicSparse | None:
    """``pruning``'s settings for dynamic sparse training, checked (one ConfigError line)."""
    if not 0.0 < cfg.final_sparsity < 1.0:
        raise ConfigError(f"pruning.final_sparsity={cfg.final_sparsity} must be in (0, 1)")
    if not 0.0 <= cfg.drop_fraction <= 1.0:
        raise ConfigError(f"pruning.drop_fraction={cfg.drop_fraction} must be in [0, 1]")
    check_one_training(cfg, "changes its mask")
    distribution = check_distribution(cfg.distribution)
    if timeline is None:
        return None
    end = timeline.iterations(cfg.end_step, "pruning.end_step")
    frequency = update_frequency(cfg, timeline)
    rewind = timeline.iterations(cfg.rewind_step, "pruning.rewind_step")
    if not rewind < end < timeline.total_steps:
        raise ConfigError(
            f"pruning.rewind_step={cfg.rewind_step!r} ({rewind} it) and pruning.end_step="
            f"{cfg.end_step!r} ({end} it) must satisfy rewind < end < train.steps "
            f"({timeline.total_steps} it)"
        )
    return DynamicSparse(cfg.final_sparsity, distribution, cfg.drop_fraction, frequency, end)



def prune(inputs: PruneInputs, s: DynamicSparse) -> Mask:
    return inputs.mask  # the training sets and changes the mask (see :func:`training_updates`)


def layer_rng(step: int, path: str, weights: np.ndarray) -> np.random.Generator:
    """The generator of one layer's random choices at ``step``: the same for the same weights."""
    digest = zlib.crc32(np.ascontiguousarray(weights).tobytes())
    return np.random.default_rng([step, zlib.crc32(path.encode()), digest])


def initial_keeps(shapes: dict[str, tuple[int, ...]], s: DynamicSparse) -> dict[str, int]:
    """How many weights each layer keeps for good: uniform or ERK at ``s.sparsity``."""
    sizes = {path: math.prod(shape) for path, shape in shapes.items()}
    uniform = {path: n - prune_count(s.sparsity, n) for path, n in sizes.items()}
    if s.distribution == "erk":
        return erk_keeps(shapes, sum(uniform.values()))
    return uniform


def random_mask(
    step: int, params: dict[str, Any], mask: dict[str, Any], prunable: list[str], s: DynamicSparse
) -> dict[str, Any]:
    """Each prunable layer's random first mask, its count from :func:`initial_keeps`."""
    keeps = initial_keeps({p: np.shape(params[p]) for p in prunable}, s)
    new = dict(mask)
    for path in prunable:
        weights = np.asarray(params[path])
        chosen = layer_rng(step, path, weights).permutation(weights.size)[: keeps[path]]
        layer = np.zeros(weights.size, bool)
        layer[chosen] = True
        new[path] = layer.reshape(weights.shape)
    return new


def drop_count(fraction: float, alive: int, size: int) -> int:
    """Weights a layer drops (and regrows): ``round(fraction · alive)``, at most its pruned."""
    return min(prune_count(fraction, alive), size - alive)


def smallest_alive(weights: np.ndarray, alive: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` alive weights of smallest magnitude (ties: first index)."""
    candidates = np.flatnonzero(alive)
    order = np.argsort(np.abs(weights.ravel()[candidates]), kind="stable")
    return candidates[order[:count]]


def evolve_layer(
    weights: np.ndarray,
    alive: np.ndarray,
    fraction: float,
    regrow: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """One layer's mask after dropping and regrowing: ``regrow(pruned flat indices, count)``
    chooses among the positions pruned before the update."""
    flat = alive.ravel()
    count = drop_count(fraction, int(flat.sum()), flat.size)
    new = flat.copy()
    if count:
        new[smallest_alive(weights, flat, count)] = False
        new[regrow(np.flatnonzero(~flat), count)] = True
    return new.reshape(alive.shape)


def evolve(
    step: int,
    params: Any,
    mask: Mask,
    prunable: list[str],
    s: DynamicSparse,
    regrow_for: Callable[[str, np.ndarray], Callable[[np.ndarray, int], np.ndarray]],
) -> Mask:
    """The mask after one drop-and-regrow update at ``step``, layer by layer."""
    flat_params, new = flatten(params), flatten(mask)
    for path in prunable:
        weights = np.asarray(flat_params[path])
        new[path] = evolve_layer(
            weights, np.asarray(new[path], bool), s.fraction_at(step), regrow_for(path, weights)
        )
    return unflatten(new)


def set_update(step: int, params: Any, mask: Mask, prunable: list[str], s: DynamicSparse) -> Mask:
    """SET's update: regrow at random among the pruned positions."""

    def regrow_for(path: str, weights: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray]:
        rng = layer_rng(step, path, weights)
        return lambda pruned, count: rng.choice(pruned, count, replace=False)

    return evolve(step, params, mask, prunable, s, regrow_for)


def training_updates(
    s: DynamicSparse, prunable: list[str], start: int, end: int
) -> tuple[list[int], Callable[[int, Any, Mask], Mask]]:
    def update(step: int, params: Any, mask: Mask) -> Mask:
        if step == start:
            return unflatten(random_mask(step, flatten(params), flatten(mask), prunable, s))
        return set_update(step, params, mask, prunable, s)

    return s.update_steps(start, end), update


STRATEGY = Strategy(
    "set", KEYS, settings, prune, during_training=True, training_updates=training_updates
)
