"""What the methods that prune at initialisation share (Frankle et al. 2021): level L keeps
as many weights as IMP's level L, chosen from the scores at the rewind point (by the
method's scorer in :mod:`lottery.pruning.at_init`), then trained once. Each method has its
own module (``snip``, ``grasp``, ``synflow``, ``magnitude_init``, ``random``) declaring its
entry with :func:`at_init_strategy`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import (
    PruneInputs,
    Strategy,
    Timeline,
    WeightGroups,
    check_score_examples,
    levels_that_prune,
    score_mode_of,
)
from lottery.pruning.erk import check_distribution
from lottery.pruning.mask import Mask, count_alive, full_mask


@dataclass(frozen=True)
class AtInitSettings:
    """Keep IMP's count of weights per level, by scores at the rewind point."""

    method: str
    fraction: float
    synflow_rounds: int
    score_examples: int
    grasp_temperature: float = 200.0
    score_mode: str = "eval"
    distribution: str = "uniform"  # per-layer density: uniform or erk (lottery.pruning.erk)


def settings(cfg: PruningConfig, timeline: Timeline | None) -> AtInitSettings:
    if cfg.synflow_rounds < 1:
        raise ConfigError(f"pruning.synflow_rounds={cfg.synflow_rounds} must be at least 1")
    check_score_examples(cfg)
    if not 0 < cfg.grasp_temperature < math.inf:
        raise ConfigError(
            f"pruning.grasp_temperature={cfg.grasp_temperature} must be a positive number "
            "(200 as in GraSP's reference code, 1 for the plain loss)"
        )
    return AtInitSettings(
        cfg.method, cfg.fraction, cfg.synflow_rounds, cfg.score_examples, cfg.grasp_temperature,
        score_mode_of(cfg), check_distribution(cfg.distribution),
    )


def weight_groups(params: Any, prunable: list[str], s: AtInitSettings) -> WeightGroups:
    return [(s.fraction, count_alive(full_mask(params), prunable))]  # one count, as IMP's


def _prune(inputs: PruneInputs, s: AtInitSettings, needs_batches: bool) -> Mask:
    from lottery.pruning.at_init import prune_at_init

    params, batch_stats = inputs.start()
    # IMP's count at this level, from the dense count (not from level L-1's mask, whose
    # total ERK's per-layer rounding may have moved by a few weights).
    keep = levels_that_prune(weight_groups(params, inputs.prunable, s), inputs.level)[1]
    batches = inputs.batches(s.score_examples) if needs_batches else []
    return prune_at_init(
        s.method, inputs.network, params, batch_stats, full_mask(params), inputs.prunable,
        batches, inputs.key, keep, synflow_rounds=s.synflow_rounds,
        grasp_temperature=s.grasp_temperature, score_mode=s.score_mode,
        distribution=s.distribution,
    )


def at_init_strategy(
    name: str, keys: frozenset[str], needs_batches: bool = False, revision: str | None = None
) -> Strategy:
    """The registry entry of the at-initialisation method ``name`` (its scorer is
    ``lottery.pruning.at_init.SCORERS[name]``), reading ``pruning.fraction``,
    ``pruning.distribution`` and ``keys``."""

    def prune(inputs: PruneInputs, s: AtInitSettings) -> Mask:
        return _prune(inputs, s, needs_batches)

    return Strategy(
        name, frozenset({"fraction", "distribution"}) | keys, settings, prune,
        weight_groups=weight_groups,
        scores_initial_weights=True, needs_batches=needs_batches,
        revision=None if revision is None else lambda cfg: revision,
    )
