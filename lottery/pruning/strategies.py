"""Pruning strategies by name: ``pruning.method`` picks one from :data:`STRATEGIES`, from an
installed package's entry point (group ``lottery.methods``) or from an import path
(``pruning.method=package.module:NAME``).

Each built-in method lives in its own module under :mod:`lottery.pruning.methods`, with its
settings and one :class:`Strategy` entry (``STRATEGY``) declaring the ``pruning`` keys it
reads and what the driver, the deployment figures and the branches need to know about it
(:mod:`lottery.pruning.base`). The registry below lists them, one line each:

- ``magnitude``: iterative magnitude pruning (global or layer-wise), with Zhou et al.'s
  criteria; ``oneshot``: the same counts, but always ranked by the dense network's trained
  weights, so level L is level 0 pruned in one shot to level L's sparsity.
- ``structured``: whole neurons and channels by the norm of their weights.
- ``blocks``: whole residual blocks with an identity shortcut, by their last BatchNorm
  scale's L1 norm (ResNets, MobileNetV2); the compacted network is shallower.
- ``gradual``: inside one training (level 1), by tfmot's polynomial schedule.
- at initialisation: ``snip``, ``grasp``, ``synflow``, ``magnitude_init``, ``random``
  (Frankle et al. 2021): level L keeps as many weights as IMP's level L, chosen from the
  scores at the rewind point, then trained once; with ``pruning.distribution=erk``, each
  layer its Erdős–Rényi-Kernel share of that count (:mod:`lottery.pruning.erk`).
- ``nm``: N:M sparsity (2:4) along each kernel's input dimension, one shot at level 1.
- ``set``: dynamic sparse training (Mocanu et al. 2018) at a fixed sparsity inside one
  training (level 1): drop the smallest alive weights, regrow as many at random;
  ``rigl`` (Evci et al. 2020): the same, regrowing where the dense gradient is largest.

Every method except ``gradual`` removes exactly ``round(fraction * n)`` of the ``n`` weights
(or units) still alive per level, so the methods meet at the same sparsities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import (
    COMMON_KEYS,
    NORMS,
    SCOPES,
    SCORE_MODES,
    PruneInputs,
    Strategy,
    Timeline,
    TrainingInputs,
    WeightGroups,
    levels_that_prune,
)
from lottery.pruning.mask import Mask
from lottery.pruning.methods import (
    blocks,
    gradual,
    grasp,
    magnitude,
    magnitude_init,
    nm,
    oneshot,
    random,
    rigl,
    snip,
    structured,
    synflow,
)
from lottery.pruning.methods import set as sparse_evolutionary  # not the builtin set
from lottery.pruning.own import own_strategy

BUILT_IN: tuple[Strategy, ...] = (
    magnitude.STRATEGY,
    oneshot.STRATEGY,
    structured.STRATEGY,
    blocks.STRATEGY,
    gradual.STRATEGY,
    snip.STRATEGY,
    grasp.STRATEGY,
    synflow.STRATEGY,
    magnitude_init.STRATEGY,
    random.STRATEGY,
    nm.STRATEGY,
    sparse_evolutionary.STRATEGY,
    rigl.STRATEGY,
)
STRATEGIES: dict[str, Strategy] = {strategy.name: strategy for strategy in BUILT_IN}
# Pruning at initialisation, by method: the ``pruning`` keys each reads besides the fraction.
AT_INIT: dict[str, frozenset[str]] = {
    s.name: s.keys - {"fraction"} for s in BUILT_IN if s.scores_initial_weights
}
MagnitudeSettings = magnitude.MagnitudeSettings


def mask_updates(
    strategy: Strategy, settings: Any, prunable: list[str], start: int, end: int
) -> tuple[list[int], Callable[[TrainingInputs], Mask]] | None:
    """For a strategy that prunes during training: the steps in ``[start, end)`` at which the
    mask changes and ``update(TrainingInputs) -> mask``; None for the others."""
    if strategy.training_updates is None:
        return None
    return strategy.training_updates(settings, prunable, start, end)


def find_strategy(method: str) -> Strategy:
    """The strategy ``pruning.method`` names: built in, an entry point of an installed
    package, or an import path; one ConfigError line if none."""
    strategy = STRATEGIES.get(method) or own_strategy(method)
    if strategy is None:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigError(
            f"unknown pruning.method {method!r}; choose one of {known}, or give a method of "
            "your own as pruning.method=package.module:NAME"
        )
    return strategy


def strategy_for(cfg: PruningConfig, timeline: Timeline | None = None) -> tuple[Strategy, Any]:
    """The strategy ``cfg.method`` names and its checked settings, or one ConfigError line.

    Without ``timeline`` (before the data is loaded), step strings are not yet converted.
    """
    strategy = find_strategy(cfg.method)
    defaults = PruningConfig()
    for item in dataclasses.fields(cfg):
        key = item.name
        if key in COMMON_KEYS or key in strategy.keys or key == "own":
            continue
        if getattr(cfg, key) != getattr(defaults, key):
            raise ConfigError(
                f"pruning.{key}={getattr(cfg, key)!r} does not apply to pruning.method="
                f"{cfg.method!r}; remove it"
            )
    check_own_keys(cfg, strategy)
    return strategy, strategy.settings(cfg, timeline)


def check_own_keys(cfg: PruningConfig, strategy: Strategy) -> None:
    """One ConfigError line for a key of ``pruning.own`` the method does not declare."""
    unknown = sorted(set(cfg.own) - strategy.own_keys)
    if unknown:
        reads = ", ".join(sorted(strategy.own_keys)) or "none"
        raise ConfigError(
            f"pruning.own.{unknown[0]} does not apply to pruning.method={cfg.method!r}, whose "
            f"own keys are: {reads}; remove it"
        )


__all__ = [
    "AT_INIT",
    "BUILT_IN",
    "COMMON_KEYS",
    "NORMS",
    "SCOPES",
    "SCORE_MODES",
    "STRATEGIES",
    "MagnitudeSettings",
    "PruneInputs",
    "Strategy",
    "Timeline",
    "TrainingInputs",
    "WeightGroups",
    "find_strategy",
    "levels_that_prune",
    "mask_updates",
    "strategy_for",
]
