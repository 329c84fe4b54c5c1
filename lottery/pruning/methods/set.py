"""``pruning.method=set``: Sparse Evolutionary Training (Mocanu et al. 2018), one level of
dynamic sparse training at a fixed sparsity (:mod:`lottery.pruning.dynamic_sparse`).

At each update a layer drops its ``k`` alive weights of smallest magnitude and regrows ``k``
at random among the positions it had pruned before the update (so at most that many drop).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lottery.pruning import dynamic_sparse
from lottery.pruning.base import Strategy, TrainingInputs
from lottery.pruning.dynamic_sparse import (
    DynamicSparse,
    evolve,
    layer_rng,
    smallest_alive,
)
from lottery.pruning.mask import Mask


def regrow_at_random(
    step: int, path: str, weights: np.ndarray, alive: np.ndarray, count: int, _: Any
) -> np.ndarray:
    """SET's rule for one layer: drop the ``count`` smallest alive (at most as many as it has
    pruned), regrow as many at random among the positions pruned before the update."""
    pruned = np.flatnonzero(~alive)
    count = min(count, pruned.size)
    new = alive.copy()
    new[smallest_alive(weights, alive, count)] = False
    new[layer_rng(step, path, weights).choice(pruned, count, replace=False)] = True
    return new


def set_update(step: int, params: Any, mask: Mask, prunable: list[str], s: DynamicSparse) -> Mask:
    """SET's update of ``mask`` at ``step`` (after its first): regrow at random."""
    return evolve(TrainingInputs(step, params, mask), prunable, s, regrow_at_random)


STRATEGY = Strategy(
    "set",
    dynamic_sparse.KEYS,
    dynamic_sparse.settings,
    dynamic_sparse.prune,
    during_training=True,
    training_updates=dynamic_sparse.training_updates_by(regrow_at_random),
)
