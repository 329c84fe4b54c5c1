"""``pruning.method=oneshot``: magnitude pruning's counts, but always ranked by the dense
network's trained weights, so level L is level 0 pruned in one shot to level L's sparsity."""

from __future__ import annotations

from lottery.config import PruningConfig
from lottery.pruning.base import PruneInputs, Strategy, Timeline, criterion_of
from lottery.pruning.magnitude import CRITERIA, criterion_scores, magnitude_prune
from lottery.pruning.mask import Mask
from lottery.pruning.methods import magnitude


def settings(cfg: PruningConfig, timeline: Timeline | None) -> magnitude.MagnitudeSettings:
    # One-shot ranks the dense network's weights by a criterion of weights alone: Taylor
    # scores need the network and batches at each level's weights (pruning.method=magnitude).
    criterion_of(cfg, CRITERIA)
    return magnitude.settings(cfg, timeline)


def prune(inputs: PruneInputs, s: magnitude.MagnitudeSettings) -> Mask:
    # Level L-1's mask kept the top of the same ranking, so pruning ``fraction`` of its
    # survivors keeps exactly the top of the dense weights at level L's count.
    dense = inputs.dense()
    start = inputs.start()[0] if s.criterion != "magnitude" else None
    scores = criterion_scores(s.criterion, dense, start)
    return magnitude_prune(
        dense, inputs.mask, inputs.prunable, s.scope, s.fraction, s.layer_fractions, scores
    )


STRATEGY = Strategy(
    "oneshot", magnitude.KEYS, settings, prune, magnitude.check,
    weight_groups=magnitude.weight_groups, ranks_dense_weights=True,
)
