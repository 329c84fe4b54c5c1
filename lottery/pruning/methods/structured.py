"""``pruning.method=structured``: whole neurons and channels, by the norm of their weights or
the Taylor criterion (Molchanov et al. 2017); every level's network can be compacted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import (
    NORMS,
    PruneInputs,
    Strategy,
    Timeline,
    check_scope,
    check_score_examples,
    check_taylor_only,
    criterion_of,
    score_mode_of,
)
from lottery.pruning.mask import Mask

KEYS = frozenset(
    {"fraction", "scope", "criterion", "start_from", "score_examples", "taylor_flops_weight",
     "score_mode"}
)


@dataclass(frozen=True)
class StructuredSettings:
    """Remove ``fraction`` of the remaining neurons / channels of lowest score per level:
    their weights' norm, or the Taylor criterion (Molchanov et al. 2017)."""

    fraction: float
    scope: str
    norm: str
    score_examples: int = 100
    flops_weight: float = 0.0
    score_mode: str = "train"  # taylor: as while fine-tuning (Molchanov et al. 2017)


def settings(cfg: PruningConfig, timeline: Timeline | None) -> StructuredSettings:
    check_scope(cfg)
    criterion = criterion_of(cfg, (*NORMS, "taylor"))
    check_taylor_only(cfg, criterion, "score_examples")
    check_score_examples(cfg)
    check_taylor_only(cfg, criterion, "taylor_flops_weight")
    check_taylor_only(cfg, criterion, "score_mode")
    if cfg.taylor_flops_weight < 0:
        raise ConfigError(
            f"pruning.taylor_flops_weight={cfg.taylor_flops_weight} must be >= 0 (0 ranks by "
            "the Taylor criterion alone)"
        )
    return StructuredSettings(
        cfg.fraction, cfg.scope, criterion, cfg.score_examples, cfg.taylor_flops_weight,
        score_mode_of(cfg, own="train"),
    )


def prune(inputs: PruneInputs, s: StructuredSettings) -> Mask:
    from lottery.pruning.structured import structured_prune, unit_groups

    scores = None
    if s.norm == "taylor":
        from lottery.pruning.taylor import taylor_scores, unit_flops

        groups = unit_groups(inputs.params)
        flops = unit_flops(inputs.network, inputs.params, groups) if s.flops_weight else None
        scores = taylor_scores(
            inputs.network, inputs.params, inputs.batch_stats, inputs.mask, groups,
            inputs.batches(s.score_examples), flops, s.flops_weight, s.score_mode,
        )
    return structured_prune(inputs.params, inputs.mask, s.fraction, s.scope, s.norm, scores)


def check(params: Any, prunable: list[str], s: StructuredSettings) -> None:
    from lottery.pruning.structured import unit_groups

    unit_groups(params)  # one line if this network's units are not known


STRATEGY = Strategy(
    "structured", KEYS, settings, prune, check, compactable=True, needs_batches=True,
    revision=lambda cfg: (  # global Taylor ranked by layer-normalised scores (issue 29)
        "structured-taylor-global-2"
        if cfg.criterion == "taylor" and cfg.scope == "global" else None
    ),
)
