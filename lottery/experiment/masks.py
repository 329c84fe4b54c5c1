"""The mask of a level: written first, before its training, and read back when it exists.

``prune(L)`` is the first half of a level L >= 1: the strategy prunes level L-1's final
weights (or, for the methods that score them, the dense or rewound ones), giving mask_L.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from lottery.atomic import this_process_writes
from lottery.data import StreamingDataset
from lottery.experiment.errors import BrokenLevel, NothingLeftToPrune
from lottery.experiment.plan import Plan
from lottery.pruning import count_alive, flatten
from lottery.pruning.strategies import PruneInputs
from lottery.store import PartialFolder, ReplicateStore, warn


def write_mask_once(folder: PartialFolder, make_mask: Callable[[], Any]) -> Any:
    """The folder's mask: read if written, else made by ``make_mask()`` and written."""
    if folder.has_mask():
        try:
            return folder.load_mask()
        except Exception:  # a truncated mask (killed mid-write): make it again
            pass
    mask = make_mask()
    if this_process_writes():
        folder.path.mkdir(parents=True, exist_ok=True)
    folder.save_mask(mask)
    return mask


def finished_weights(replicate: ReplicateStore, level: int) -> tuple[Any, Any]:
    """A finished level's weights and BatchNorm statistics; :class:`BrokenLevel` where its
    files cannot be read (truncated or garbled: that level is made again)."""
    try:
        return replicate.params(level)
    except Exception as error:
        raise BrokenLevel(level, f"{type(error).__name__}: {error}") from None


class Pruner:
    """Makes (or reads back) the masks of levels >= 1 of one replicate."""

    def __init__(
        self,
        plan: Plan,
        replicate: ReplicateStore,
        dense: ReplicateStore,
        rewind_point: Callable[..., tuple[Any, Any]],
    ) -> None:
        self.plan, self.replicate, self.dense = plan, replicate, dense
        self.rewind_point = rewind_point

    def prune(self, level: int) -> tuple[PartialFolder, Any, float]:
        """Write level ``level``'s mask first (unless written); (folder, mask, seconds)."""
        folder = self.replicate.partial_level(level)
        begin = time.perf_counter()
        mask = write_mask_once(folder, lambda: self._make_mask(level))
        collapsed = [p for p in self.plan.prunable if not np.any(flatten(mask)[p])]
        if collapsed:
            warn(
                f"level {level}: {', '.join(collapsed)} has no weight left (layer collapse): "
                "the output no longer depends on the input through it"
            )
        return folder, mask, time.perf_counter() - begin

    def _make_mask(self, level: int) -> Any:
        plan = self.plan
        previous, previous_stats = finished_weights(self.replicate, level - 1)
        try:
            previous_mask = self.replicate.mask(level - 1)
        except Exception as error:  # truncated or garbled files: redo that level
            raise BrokenLevel(level - 1, f"{type(error).__name__}: {error}") from None
        inputs = self._inputs(level, previous, previous_mask, previous_stats)
        mask = plan.strategy.prune(inputs, plan.strategy_settings)
        alive = count_alive(mask, plan.prunable)
        if not plan.strategy.during_training and alive == count_alive(previous_mask, plan.prunable):
            raise NothingLeftToPrune(
                f"stopped before level {level}: pruning removes no more weights "
                f"({alive:,} left); levels {level}..{plan.cfg.pruning.levels} would repeat "
                f"level {level - 1}"
            )
        return mask

    def _inputs(
        self, level: int, previous: Any, previous_mask: Any, previous_stats: Any
    ) -> PruneInputs:
        plan = self.plan

        def dense() -> Any:
            return self.dense.params(0)[0]

        def batches(count: int) -> list[tuple[Any, Any]]:
            return [scoring_batch(plan, level, count)]

        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(plan.cfg.seed), 2), level)
        return PruneInputs(
            level,
            previous,
            previous_mask,
            plan.prunable,
            self.rewind_point,
            dense,
            plan.network,
            batches,
            key,
            previous_stats if previous_stats is not None else {},
        )


def scoring_batch(plan: Plan, level: int, count: int) -> tuple[Any, Any]:
    """``count`` training examples at random (fixed by the data seed and level) for the
    pruning scores that look at data (SNIP, GraSP)."""
    dataset = plan.dataset
    if isinstance(dataset, StreamingDataset):
        x, y = next(dataset.train_batches(count, plan.data_seed, level))  # a batch per level
        return jax.numpy.asarray(x), jax.numpy.asarray(y)
    count = min(count, dataset.num_train)
    rng = np.random.default_rng([plan.data_seed, level, 3])
    index = np.sort(rng.choice(dataset.num_train, size=count, replace=False))
    return jax.numpy.asarray(dataset.train.x[index]), jax.numpy.asarray(dataset.train.y[index])
