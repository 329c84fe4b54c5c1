"""Gradual magnitude pruning inside one training (Zhu & Gupta 2017), step for step as tfmot.

TensorFlow Model Optimization's ``prune_low_magnitude`` with
``PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step, power, frequency)``
and its ``UpdatePruningStep`` callback, trained by Keras ``fit``:

- **When.** tfmot's pruning step ``t`` counts the training forward passes: the callback sets it
  to 0 when training begins and the wrapper adds 1 at the start of each forward pass, before
  it updates the mask. So the mask of step ``t`` (``begin_step <= t <= end_step``,
  ``(t - begin_step) % frequency == 0``) is computed from the weights after ``t - 1`` gradient
  steps and used by gradient step ``t``. Our loop's hook at iteration ``i`` sees the weights
  after ``i`` steps, so the mask of tfmot's step ``t`` is made at iteration ``t - 1``
  (:func:`tfmot_step`). Step 0 never comes: with ``begin_step=0`` the first update is at
  ``t = frequency``, never before training.
- **How many.** Each prunable layer of ``n`` weights keeps ``k = max(round(n * (1 - s(t))), 1)``,
  every quantity in float32 and ``round`` half to even (``tf.math.round``), with
  ``s(t) = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_1 - t_0)) ** power`` computed as Keras'
  graph computes it on a CPU (:meth:`PolynomialDecay.sparsity`).
- **Which.** tfmot keeps every weight with ``|w| >= `` the k-th largest ``|w|`` of the layer:
  all the weights tied at the threshold stay, so a layer can keep more than ``k``.

One difference, by design: tfmot lets pruned weights receive optimizer updates between
forward passes (it zeroes them by assignment before each forward pass, not in the gradient),
so a pruned weight whose update lifts it above a later threshold comes back; here a pruned
weight is 0.0 after every step (invariant 1) and never comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.pruning.mask import Mask, flatten, unflatten

f32 = np.float32


def tfmot_step(iteration: int) -> int:
    """tfmot's pruning step in the forward pass after ``iteration`` gradient steps."""
    return iteration + 1


@dataclass(frozen=True)
class PolynomialDecay:
    """The sparsity schedule, in tfmot's pruning steps (iterations + 1, see the module)."""

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    power: int = 3

    def sparsity(self, step: int) -> np.float32:
        """s(step) in float32, held at s_i before ``begin_step`` and at s_f after ``end_step``,
        bit for bit as tfmot's schedule runs inside Keras' ``fit`` on a CPU: TensorFlow's graph
        optimiser (Grappler) turns the division by ``end - begin`` into a multiplication by its
        float32 reciprocal and ``pow(x, 3)`` into ``(c * x) * (x * x)`` with the constant
        ``c = s_i - s_f`` moved in (``pow(x, 2)`` into ``c * (x * x)``); other powers stay
        ``powf``. (Eager tfmot divides and calls ``powf``: 33 of the 36,003 keep counts of
        LeNet-300-100's three kernels over the preset's 12,000 steps differ by one weight.)"""
        span_inverse = f32(1.0) / f32(self.end_step - self.begin_step)
        progress = f32(step - self.begin_step) * span_inverse
        x = f32(1.0) - np.minimum(f32(1.0), np.maximum(f32(0.0), progress))
        c = f32(self.initial_sparsity - self.final_sparsity)  # Python's float64, then float32
        if self.power == 3:
            scaled = (c * x) * (x * x)
        elif self.power == 2:
            scaled = c * (x * x)
        elif self.power == 1:
            scaled = c * x
        else:
            scaled = c * x ** f32(self.power)
        return f32(scaled + f32(self.final_sparsity))

    def pruning_steps(self) -> range:
        """tfmot's steps that update the mask: every ``frequency`` from ``begin_step`` to
        ``end_step``, from step 1 on (tfmot's first forward pass is step 1)."""
        first = self.begin_step if self.begin_step >= 1 else self.frequency
        return range(first, self.end_step + 1, self.frequency)

    def update_steps(self, start: int, end: int) -> list[int]:
        """The iterations in ``[start, end)`` at which the mask is updated: one before each of
        tfmot's pruning steps."""
        return [t - 1 for t in self.pruning_steps() if start <= t - 1 < end]

    def sparsity_after(self, iteration: int) -> np.float32:
        """The sparsity of the mask made at ``iteration`` (tfmot's step ``iteration + 1``)."""
        return self.sparsity(tfmot_step(iteration))


def keep_count(size: int, sparsity: float) -> int:
    """tfmot's ``k`` for a layer of ``size`` at ``sparsity``:
    ``max(round(float32(size) * (1 - s)), 1)``, in float32, rounding half to even."""
    kept = np.round(f32(size) * (f32(1.0) - f32(sparsity)))
    return max(int(kept), 1)


def tfmot_layer_mask(magnitudes: np.ndarray, alive: np.ndarray, sparsity: float) -> np.ndarray:
    """tfmot's ``_update_mask`` on one layer, without revival: the alive weights with
    ``|w| >=`` the k-th largest ``|w|`` of the whole layer (pruned weights are 0.0 and count
    as such, as in tfmot). Ties at the threshold all stay."""
    flat = magnitudes.reshape(-1)
    k = keep_count(flat.size, sparsity)
    threshold = np.partition(flat, flat.size - k)[flat.size - k]  # the k-th largest
    return alive & (magnitudes >= threshold)


def gradual_mask(params: Any, mask: Mask, prunable: list[str], sparsity: float) -> Mask:
    """Each prunable layer pruned to ``sparsity`` by tfmot's rule (never un-pruning a weight)."""
    weights = flatten(params)
    new_mask = {p: np.array(m, dtype=bool, copy=True) for p, m in flatten(mask).items()}
    for path in prunable:
        magnitudes = np.abs(np.asarray(weights[path], dtype=np.float32))
        new_mask[path] = tfmot_layer_mask(magnitudes, new_mask[path], sparsity)
    return unflatten(new_mask)
