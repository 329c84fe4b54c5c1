"""Masks, which leaves are prunable, magnitude pruning and sparsity reports. Never trains."""

from lottery.pruning.magnitude import magnitude_prune, prune_count, pruning_groups
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
from lottery.pruning.report import sparsity_report
from lottery.pruning.strategies import STRATEGIES, Strategy, strategy_for

__all__ = [
    "STRATEGIES",
    "Mask",
    "Strategy",
    "apply_mask",
    "count_alive",
    "flatten",
    "full_mask",
    "layer_of",
    "magnitude_prune",
    "prunable_paths",
    "prune_count",
    "pruning_groups",
    "sparsity_report",
    "strategy_for",
    "unflatten",
]
