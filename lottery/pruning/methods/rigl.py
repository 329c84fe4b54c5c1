"""``pruning.method=rigl``: Rigging the Lottery (Evci et al. 2020), one level of dynamic
sparse training at a fixed sparsity (:mod:`lottery.pruning.dynamic_sparse`).

At each update a layer drops its ``k`` alive weights of smallest magnitude, then grows the
``k`` positions of largest dense-gradient magnitude ``|∇L|`` among those not alive after the
drop (the loss gradient at the current weights on the batch the next step trains on), as
the authors' ``SparseRigLOptimizer`` (``rigl/sparse_optimizers.py``) does: a weight dropped
and grown in the same update keeps its value and optimizer moments (their
``reinit_when_same=False``), a newly grown one starts at 0.0 with zeroed moments. Two
differences, both named: ties in ``|w|`` and ``|∇L|`` go to the lower flat index (theirs add
noise of std 1e-5 to the drop scores), and ``k = round(f(t) · n)`` rounds half up, as IMP's
counts here (theirs: TensorFlow's half to even).
"""

from __future__ import annotations

import numpy as np

from lottery.pruning import dynamic_sparse
from lottery.pruning.base import Strategy, TrainingInputs
from lottery.pruning.dynamic_sparse import smallest_alive
from lottery.pruning.mask import flatten


def largest_gradients(gradient: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` candidates of largest ``|gradient|`` (ties: first index)."""
    order = np.argsort(-np.abs(gradient.ravel()[candidates]), kind="stable")
    return candidates[order[:count]]


def regrow_by_gradient(
    step: int,
    path: str,
    weights: np.ndarray,
    alive: np.ndarray,
    count: int,
    inputs: TrainingInputs,
) -> np.ndarray:
    """RigL's rule for one layer: drop the ``count`` smallest alive, grow the ``count`` of
    largest dense-gradient magnitude among the positions not alive after the drop."""
    new = alive.copy()
    new[smallest_alive(weights, alive, count)] = False
    gradient = np.asarray(flatten(inputs.gradients())[path])
    new[largest_gradients(gradient, np.flatnonzero(~new), count)] = True
    return new


STRATEGY = Strategy(
    "rigl",
    dynamic_sparse.KEYS,
    dynamic_sparse.settings,
    dynamic_sparse.prune,
    during_training=True,
    training_updates=dynamic_sparse.training_updates_by(regrow_by_gradient),
)
