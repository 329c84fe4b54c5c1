"""Gradual magnitude pruning inside one training (Zhu & Gupta 2017), as tfmot does it.

TensorFlow Model Optimization's ``prune_low_magnitude`` with
``PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step, power=3,
frequency=100)``: at every step t with ``begin_step <= t <= end_step`` and
``(t - begin_step) % frequency == 0``, each prunable layer keeps its ``round(n * (1 - s(t)))``
largest-magnitude weights, with

    s(t) = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_1 - t_0)) ** power.

The update happens before the gradient step t (tfmot updates the mask in the forward pass of
step t). Weights already pruned are 0, so they rank lowest and the mask only grows while s(t)
rises. Ties go to the earlier weight (flat index), as in magnitude pruning; tfmot keeps every
weight tied at the threshold. ``round`` halves to even, as ``tf.math.round`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.pruning.magnitude import remove_lowest
from lottery.pruning.mask import Mask, flatten, unflatten


@dataclass(frozen=True)
class PolynomialDecay:
    """The sparsity schedule, in iterations."""

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    power: int = 3

    def sparsity(self, step: int) -> float:
        """s(t), held at s_i before ``begin_step`` and at s_f after ``end_step``."""
        progress = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power
        )

    def update_steps(self, start: int, end: int) -> list[int]:
        """The steps in ``[start, end)`` at which the mask is updated."""
        first = max(start, self.begin_step)
        offset = (first - self.begin_step) % self.frequency
        if offset:
            first += self.frequency - offset
        return list(range(first, min(end - 1, self.end_step) + 1, self.frequency))


def keep_count(size: int, sparsity: float) -> int:
    """Weights a layer of ``size`` keeps at ``sparsity`` (tfmot: ``round(size * (1 - s))``)."""
    return round(size * (1.0 - sparsity))


def gradual_mask(params: Any, mask: Mask, prunable: list[str], sparsity: float) -> Mask:
    """Each prunable layer at ``sparsity`` (never un-pruning a weight): its largest-magnitude
    alive weights kept."""
    weights = flatten(params)
    new_mask = {p: np.array(m, dtype=bool, copy=True) for p, m in flatten(mask).items()}
    for path in prunable:
        layer = new_mask[path]
        excess = int(np.count_nonzero(layer)) - keep_count(layer.size, sparsity)
        if excess > 0:
            remove_lowest({path: np.abs(np.asarray(weights[path]))}, {path: layer}, excess)
    return unflatten(new_mask)
