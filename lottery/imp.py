"""Iterative magnitude pruning with weight rewinding: the driver, by its historical name.

The driver lives in :mod:`lottery.experiment`; this module keeps ``lottery.imp.run`` and
friends working for scripts written against it.
"""

from lottery.experiment import Experiment, Plan, prepare, run, summarize
from lottery.pruning import apply_mask, full_mask

__all__ = ["Experiment", "Plan", "apply_mask", "full_mask", "prepare", "run", "summarize"]
