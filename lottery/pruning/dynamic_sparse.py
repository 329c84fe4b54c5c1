"""What the dynamic sparse methods (``set``, ``rigl``) share: their settings, the random
first mask at a fixed sparsity, the drop fraction's cosine decay, and dropping the smallest
alive weights of a layer. Each method chooses where the dropped weights grow back.

At the rewind step (the level's first) each prunable layer gets a random mask at density
``1 - pruning.final_sparsity`` (or its Erdős–Rényi-Kernel share, ``pruning.distribution=erk``).
Then, at every multiple of ``pruning.frequency`` before ``pruning.end_step``, each layer drops
the ``round(f(t) · n)`` of its ``n`` alive weights of smallest magnitude and regrows as many,
where ``f(t)`` is RigL's cosine decay of ``pruning.drop_fraction``:
``drop_fraction · (1 + cos(π t / end_step)) / 2``. Each layer's count of alive weights stays
exactly what its first mask gave it. Weights that come back start at exactly 0.0 (they were
pruned) with zeroed optimizer moments (:class:`lottery.train.UpdateMask`).

Every random choice comes from a generator seeded by the step, the layer and a digest of the
layer's weights (so by the run's seed, through them): a resumed run draws the same.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import Timeline, TrainingInputs, check_one_training, update_frequency
from lottery.pruning.erk import check_distribution, erk_keeps
from lottery.pruning.magnitude import prune_count
from lottery.pruning.mask import Mask, flatten, unflatten

KEYS = frozenset({"final_sparsity", "end_step", "frequency", "drop_fraction", "distribution"})

# (step, layer path, its weights, its alive mask before the update, drop count, update
# inputs) -> the layer's new mask (flat). A method's rule for one layer.
LayerRule = Callable[[int, str, np.ndarray, np.ndarray, int, TrainingInputs], np.ndarray]


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
    """Each prunable layer's random first mask (flat trees), its count from
    :func:`initial_keeps`."""
    keeps = initial_keeps({p: np.shape(params[p]) for p in prunable}, s)
    new = dict(mask)
    for path in prunable:
        weights = np.asarray(params[path])
        chosen = layer_rng(step, path, weights).permutation(weights.size)[: keeps[path]]
        layer = np.zeros(weights.size, bool)
        layer[chosen] = True
        new[path] = layer.reshape(weights.shape)
    return new


def smallest_alive(weights: np.ndarray, alive: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` alive weights of smallest magnitude (ties: first index)."""
    candidates = np.flatnonzero(alive)
    order = np.argsort(np.abs(weights.ravel()[candidates]), kind="stable")
    return candidates[order[:count]]


def evolve(inputs: TrainingInputs, prunable: list[str], s: DynamicSparse, rule: LayerRule) -> Mask:
    """The mask after one drop-and-regrow update at ``inputs.step``, layer by layer: each
    layer drops ``round(f(t) · alive)`` weights (at most what ``rule`` can regrow among the
    positions it was told about) and ``rule`` makes its new flat mask."""
    flat_params, new = flatten(inputs.params), flatten(inputs.mask)
    fraction = s.fraction_at(inputs.step)
    for path in prunable:
        weights = np.asarray(flat_params[path])
        alive = np.asarray(new[path], bool).ravel()
        count = prune_count(fraction, int(alive.sum()))
        if count:
            layer = rule(inputs.step, path, weights, alive, count, inputs)
            new[path] = layer.reshape(weights.shape)
    return unflatten(new)


def training_updates_by(
    rule: LayerRule,
) -> Callable[[DynamicSparse, list[str], int, int], tuple[list[int], Any]]:
    """A ``Strategy.training_updates`` of a dynamic sparse method: the random first mask at
    the level's first step, then :func:`evolve` by ``rule`` at every later update."""

    def training_updates(
        s: DynamicSparse, prunable: list[str], start: int, end: int
    ) -> tuple[list[int], Callable[[TrainingInputs], Mask]]:
        def update(inputs: TrainingInputs) -> Mask:
            if inputs.step == start:
                flat = random_mask(
                    inputs.step, flatten(inputs.params), flatten(inputs.mask), prunable, s
                )
                return unflatten(flat)
            return evolve(inputs, prunable, s, rule)

        return s.update_steps(start, end), update

    return training_updates


def prune(inputs: Any, s: DynamicSparse) -> Mask:
    """A level's mask before its training: unchanged (the training sets and changes it)."""
    return inputs.mask
