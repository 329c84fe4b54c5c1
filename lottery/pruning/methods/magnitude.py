"""``pruning.method=magnitude``: iterative magnitude pruning (global or layer-wise), with Zhou
et al.'s criteria and Molchanov et al.'s Taylor criterion: level L removes ``fraction`` of
the weights level L-1 left, those of lowest score at level L-1's trained weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.config import PruningConfig
from lottery.pruning.base import (
    PruneInputs,
    Strategy,
    Timeline,
    WeightGroups,
    check_scope,
    check_score_examples,
    check_taylor_only,
    criterion_of,
    score_mode_of,
)
from lottery.pruning.magnitude import CRITERIA, criterion_scores, magnitude_prune, pruning_groups
from lottery.pruning.mask import Mask, flatten, full_mask

KEYS = frozenset(
    {"fraction", "scope", "layer_fractions", "criterion", "start_from", "score_examples",
     "score_mode"}
)


@dataclass(frozen=True)
class MagnitudeSettings:
    """Remove ``fraction`` of the remaining weights of lowest score per level."""

    fraction: float
    scope: str
    layer_fractions: dict[str, float]
    criterion: str = "magnitude"
    score_examples: int = 100  # taylor: training examples the gradients are taken on
    score_mode: str = "eval"  # taylor: how the network runs while scored


def settings(cfg: PruningConfig, timeline: Timeline | None) -> MagnitudeSettings:
    check_scope(cfg)
    criterion = criterion_of(cfg, (*CRITERIA, "taylor"))
    check_taylor_only(cfg, criterion, "score_examples")
    check_score_examples(cfg)
    check_taylor_only(cfg, criterion, "score_mode")
    return MagnitudeSettings(
        cfg.fraction, cfg.scope, dict(cfg.layer_fractions), criterion, cfg.score_examples,
        score_mode_of(cfg),
    )


def prune(inputs: PruneInputs, s: MagnitudeSettings) -> Mask:
    if s.criterion == "taylor":  # |w · g| at the trained weights (Molchanov et al. 2017)
        from lottery.pruning.at_init import snip_scores

        scores = snip_scores(
            inputs.network, inputs.params, inputs.batch_stats, inputs.mask, inputs.prunable,
            inputs.batches(s.score_examples), s.score_mode,
        )
    else:
        start = inputs.start()[0] if s.criterion != "magnitude" else None
        scores = criterion_scores(s.criterion, inputs.params, start)
    return magnitude_prune(
        inputs.params, inputs.mask, inputs.prunable, s.scope, s.fraction, s.layer_fractions,
        scores,
    )


def check(params: Any, prunable: list[str], s: MagnitudeSettings) -> None:
    # Rate 0 prunes nothing (no sort of every weight) but checks layer_fractions' keys.
    magnitude_prune(params, full_mask(params), prunable, s.scope, 0.0, s.layer_fractions)


def weight_groups(params: Any, prunable: list[str], s: MagnitudeSettings) -> WeightGroups:
    sizes = {path: int(np.size(value)) for path, value in flatten(params).items()}
    groups = pruning_groups(prunable, s.scope, s.fraction, s.layer_fractions)
    return [(rate, sum(sizes[path] for path in paths)) for rate, paths in groups]


STRATEGY = Strategy(
    "magnitude", KEYS, settings, prune, check, weight_groups=weight_groups, needs_batches=True
)
