"""Masks, which leaves are prunable, magnitude pruning and sparsity reports. Never trains.

For a training loop of one's own (:mod:`lottery.pruning.optax_mask`): :func:`prune` gives
the next mask by magnitude or at random, :func:`masked` wraps any optax optimizer so that
pruned weights stay exactly +0.0, and the score functions rank weights as the methods of
the command line do (:func:`criterion_scores` for trained weights; :func:`at_init_scores`,
:func:`snip_scores`, :func:`grasp_scores`, :func:`synflow_scores` and
:func:`random_scores` at initialisation: higher keeps).
"""

from lottery.pruning.at_init import (
    at_init_scores,
    grasp_scores,
    random_scores,
    snip_scores,
    synflow_scores,
)
from lottery.pruning.base import PruneInputs, Timeline, TrainingInputs
from lottery.pruning.magnitude import (
    criterion_scores,
    magnitude_prune,
    prune_count,
    pruning_groups,
)
from lottery.pruning.mask import (
    Mask,
    apply_mask,
    count_alive,
    flatten,
    full_mask,
    layer_of,
    prunable_paths,
    unflatten,
)
from lottery.pruning.optax_mask import masked, prune
from lottery.pruning.report import sparsity_report
from lottery.pruning.strategies import STRATEGIES, Strategy, find_strategy, strategy_for

__all__ = [
    "STRATEGIES",
    "Mask",
    "PruneInputs",
    "Strategy",
    "Timeline",
    "TrainingInputs",
    "apply_mask",
    "at_init_scores",
    "count_alive",
    "criterion_scores",
    "find_strategy",
    "flatten",
    "full_mask",
    "grasp_scores",
    "layer_of",
    "magnitude_prune",
    "masked",
    "prunable_paths",
    "prune",
    "prune_count",
    "pruning_groups",
    "random_scores",
    "snip_scores",
    "sparsity_report",
    "strategy_for",
    "synflow_scores",
    "unflatten",
]
