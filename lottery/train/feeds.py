"""Where a run's batches come from: the device (small datasets) or a host stream (ImageNet).

A feed runs a stretch of training steps and sums the eval metrics; the :class:`Trainer`
drives the cadence, compiles, and times. ``compiled(key, jitted, *args, **static)`` is the
trainer's ahead-of-time compile cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lottery.data import Dataset, StreamingDataset, batch_order, stream_seed
from lottery.train.steps import pad_for_eval

Compiled = Callable[..., Any]
EvalSums = dict[str, tuple[Any, int]]  # split -> ((loss sum, correct), examples)


class DeviceFeed:
    """The whole dataset on the device; batches gathered by index inside the jitted scan."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        total_steps: int,
        eval_batch_size: int,
        train_steps: Any,
        evaluate: Any,
        max_fused: int | None = None,
        placement: jax.sharding.Sharding | None = None,
    ) -> None:
        self.max_fused = max_fused
        # Where arrays go: the default device, or replicated over a data-parallel mesh.
        self.put = lambda x: jax.device_put(x, placement)
        self.batch_size, self.total_steps = batch_size, total_steps
        # jax.device_put, not jnp.asarray: on the CPU the latter makes an extra host copy
        # of the whole dataset (docs/benchmarks.md, "Design measurements").
        self.x = self.put(dataset.train.x)
        self.y = self.put(dataset.train.y)
        self.order: jax.Array | None = None
        self._stream: tuple[int, int] | None = None
        self.eval_sets = {
            name: (
                *map(self.put, pad_for_eval(split.x, split.y, eval_batch_size)),
                len(split),
            )
            for name, split in (("val", dataset.validation), ("test", dataset.test))
            if len(split)
        }
        self.train_steps, self.evaluate = train_steps, evaluate

    def use_stream(self, data_seed: int, stream: int) -> None:
        """Visit the examples in the order of ``(data_seed, stream)`` (see ``batch_order``)."""
        if self._stream != (data_seed, stream):
            self.order = None  # free the previous order's device memory first
            order = batch_order((data_seed, stream), len(self.y), self.batch_size, self.total_steps)
            self.order = self.put(order)
            self._stream = (data_seed, stream)

    @property
    def one_step_per_call(self) -> bool:
        """Whether each step is its own call (convolutional networks on the CPU), so that a
        stretch can stop between two steps."""
        return self.max_fused == 1

    def run(
        self,
        compiled: Compiled,
        state: Any,
        mask: Any,
        key: jax.Array,
        start: int,
        num_steps: int,
        stop: Callable[[], bool] | None = None,
        earlier: Sequence[float] = (),
    ) -> tuple[Any, jax.Array | None, list[float]]:
        """Steps ``start .. start + num_steps``, fused into calls of at most ``max_fused``
        steps (one call when unlimited); returns the state and the mean loss over the stretch
        (``earlier``: the losses of its steps trained before it was stopped).

        With one step per call, ``stop`` is asked before each step; when it says so, the
        loss is None and the third value is every step's loss so far (for
        :class:`~lottery.train.loop.UnfinishedStretch`)."""
        chunk = min(num_steps, self.max_fused or num_steps)
        # The uninterrupted stretch's sum, in its order: each call's loss times its steps.
        losses: list[Any] = [jnp.float32(loss) for loss in earlier]
        done = 0
        while done < num_steps:
            if stop is not None and chunk == 1 and stop():
                return state, None, [float(loss) for loss in jax.device_get(losses)]
            n = min(chunk, num_steps - done)
            args = (state, mask, self.x, self.y, self.order, key)
            state, loss = compiled(("train", n), self.train_steps, *args, num_steps=n)(*args)
            losses.append(loss * n)
            done += n
        return state, sum(losses) / (num_steps + len(earlier)), []

    def batch_at(self, step: int) -> tuple[jax.Array, jax.Array]:
        """The training batch step ``step`` trains on (before its augmentation)."""
        index = self.order[step]
        return self.x[index], self.y[index]

    def eval_sums(self, compiled: Compiled, params: Any, batch_stats: Any) -> EvalSums:
        sums = {}
        for name, (x, y, weight, count) in self.eval_sets.items():
            if self.max_fused == 1:  # one batch per call
                totals = (jnp.zeros(()), jnp.zeros(()))
                for i in range(x.shape[0]):
                    args = (params, batch_stats, x[i : i + 1], y[i : i + 1], weight[i : i + 1])
                    loss, correct = compiled(("eval", name, 1), self.evaluate, *args)(*args)
                    totals = (totals[0] + loss, totals[1] + correct)
                sums[name] = (totals, count)
                continue
            args = (params, batch_stats, x, y, weight)
            sums[name] = (compiled(("eval", name), self.evaluate, *args)(*args), count)
        return sums


class StreamFeed:
    """Batches read on the host, one train step per call (a step is long; its dispatch is
    asynchronous, so the next batch is read while the device computes)."""

    def __init__(
        self,
        dataset: StreamingDataset,
        *,
        batch_size: int,
        eval_batch_size: int,
        train_steps: Any,
        evaluate: Any,
        batch_sharding: jax.sharding.NamedSharding | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, 0
        # Data parallel: each host batch split over the devices (those of every process),
        # behind the leading axis of one batch per step; the step's XLA program is then
        # partitioned as the device-held feed's is (gradients and BatchNorm statistics
        # reduced over the whole batch).
        self.stacked_sharding = None if batch_sharding is None else jax.sharding.NamedSharding(
            batch_sharding.mesh, jax.sharding.PartitionSpec(None, *batch_sharding.spec)
        )
        # One process of several, with a dataset that reads a process's rows of a batch:
        # (this process, the processes); else every process reads every whole batch.
        self.process = None
        if (batch_sharding is not None and jax.process_count() > 1
                and dataset.process_train_batches is not None):
            self.process = (jax.process_index(), jax.process_count())
        self.eval_batch_size = eval_batch_size
        self.train_steps, self.evaluate = train_steps, evaluate
        self._batches: Iterator | None = None
        self._next_step: int | None = None

    def use_stream(self, data_seed: int, stream: int) -> None:
        """Shuffle and augment with the seed of ``(data_seed, stream)``."""
        seed = stream_seed(data_seed, stream)
        if seed != self.seed:
            self.seed, self._next_step = seed, None

    one_step_per_call = True  # a stretch can stop between two steps (see DeviceFeed.run)

    def run(
        self,
        compiled: Compiled,
        state: Any,
        mask: Any,
        key: jax.Array,
        start: int,
        num_steps: int,
        stop: Callable[[], bool] | None = None,
        earlier: Sequence[float] = (),
    ) -> tuple[Any, jax.Array | None, list[float]]:
        """As :meth:`DeviceFeed.run`, one host batch per step."""
        if self._next_step != start:
            self._batches = self._train_batches(start)
        losses: list[Any] = [jnp.float32(loss) for loss in earlier]
        for done in range(num_steps):
            if stop is not None and stop():
                self._next_step = start + done
                return state, None, [float(loss) for loss in jax.device_get(losses)]
            x, y = next(self._batches)
            args = (state, mask, *self._stacked(x, y), key)
            state, loss = compiled(("stream",), self.train_steps, *args)(*args)
            losses.append(loss)
        self._next_step = start + num_steps
        return state, jnp.mean(jnp.stack(losses)), []

    def _train_batches(self, start: int) -> Iterator:
        """The training batches from step ``start``: whole, or this process's rows."""
        if self.process is None:
            return self.dataset.train_batches(self.batch_size, self.seed, start)
        assert self.dataset.process_train_batches is not None
        return self.dataset.process_train_batches(self.batch_size, self.seed, start,
                                                  *self.process)

    def _stacked(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        """One host batch as a stack of one, split over the devices when data parallel:
        every process reads the same whole batch and puts the slices its devices hold, or
        (``self.process``) its own rows, joined into the global batch."""
        if self.stacked_sharding is None:
            return x[None], y[None]
        if self.process is None:
            return jax.device_put((x[None], y[None]), self.stacked_sharding)
        return tuple(
            jax.make_array_from_process_local_data(
                self.stacked_sharding, rows[None], (1, self.batch_size, *rows.shape[1:])
            )
            for rows in (x, y)
        )

    def batch_at(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The training batch step ``step`` trains on (read again from the stream)."""
        return next(self.dataset.train_batches(self.batch_size, self.seed, step))

    def eval_sums(self, compiled: Compiled, params: Any, batch_stats: Any) -> EvalSums:
        sums = {}
        for name, batches in self.dataset.eval_batches.items():
            totals, count = (jnp.zeros(()), jnp.zeros(())), 0
            for x, y in batches(self.eval_batch_size):
                args = (params, batch_stats, *_padded(x, y, self.eval_batch_size))
                loss, correct = compiled(("eval", "stream"), self.evaluate, *args)(*args)
                totals = (totals[0] + loss, totals[1] + correct)
                count += len(y)
            sums[name] = (totals, count)
        return sums


def _padded(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """One eval batch padded to ``size`` (fixed shape: one compilation), as a batch of one."""
    pad = size - len(y)
    weight = np.concatenate([np.ones(len(y), np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    return x[None], y[None], weight[None]
