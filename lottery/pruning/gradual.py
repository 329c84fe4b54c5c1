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
weight tied at the threshold. The schedule and the keep count are computed in float32 and
``round`` halves to even, as tfmot does with ``tf.math.round``; a layer keeps at least one
weight.
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

    def sparsity(self, step: int) -> np.float32:
        """s(t), held at s_i before ``begin_step`` and at s_f after ``end_step``; in float32
        as tfmot computes it (float64 would round some keep counts the other way)."""
        f32 = np.float32
        progress = (f32(step) - f32(self.begin_step)) / (f32(self.end_step) - f32(self.begin_step))
        progress = np.minimum(f32(1.0), np.maximum(f32(0.0), progress))
        decay = (f32(1.0) - progress) ** f32(self.power)
        return (f32(self.initial_sparsity) - f32(self.final_sparsity)) * decay + f32(
            self.final_sparsity
        )

    def update_steps(self, start: int, end: int) -> list[int]:
        """The steps in ``[start, end)`` at which the mask is updated."""
        first = max(start, self.begin_step)
        offset = (first - self.begin_step) % self.frequency
        if offset:
            first += self.frequency - offset
        return list(range(first, min(end - 1, self.end_step) + 1, self.frequency))


def keep_count(size: int, sparsity: float) -> int:
    """Weights a layer of ``size`` keeps at ``sparsity``: tfmot's
    ``max(round(float32(size) * (1 - s)), 1)``, in float32, rounding half to even."""
    kept = np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))
    return max(int(kept), 1)


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
