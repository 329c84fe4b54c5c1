"""The training loop of one level: compiled once per run, reused by every level."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lottery.config import OptimizerConfig
from lottery.data import Dataset, StreamingDataset
from lottery.models import Network
from lottery.train.feeds import DeviceFeed, StreamFeed
from lottery.train.optim import make_optimizer, make_schedule
from lottery.train.state import TrainState
from lottery.train.steps import (
    Augment,
    fused_steps_limit,
    make_evaluate,
    make_streamed_train_steps,
    make_train_steps,
)

EvalCallback = Callable[[dict[str, float]], None]


@dataclass
class Timing:
    """Seconds spent per phase; compile time is counted apart from training."""

    compile: float = 0.0
    train: float = 0.0
    eval: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"compile": self.compile, "train": self.train, "eval": self.eval}


@dataclass
class LevelResult:
    """What one training run gives back: final weights, evaluations, the rewind point."""

    params: Any
    batch_stats: Any
    history: list[dict[str, float]]
    # Host copies of (params, batch_stats) at ``snapshot_step``, when the run passed it.
    snapshot: tuple[Any, Any] | None
    timing: Timing = field(default_factory=Timing)
    steps: int = 0


def eval_points(start: int, end: int, every: int, extra: int | None = None) -> list[int]:
    """Steps at which a run from ``start`` to ``end`` stops: evaluations, ``extra``, the end."""
    points = {start, end, *range((start // every + 1) * every, end, every)}
    if extra is not None and start < extra < end:
        points.add(extra)
    return sorted(points)


class Trainer:
    """The data feed and the compiled step/eval functions of a run, reused by every level."""

    def __init__(
        self,
        network: Network,
        dataset: Dataset | StreamingDataset,
        optimizer: OptimizerConfig,
        *,
        batch_size: int,
        total_steps: int,
        steps_per_epoch: int,
        eval_every: int,
        eval_batch_size: int,
        seed: int,
        augment: Augment | None = None,
    ) -> None:
        self.network = network
        self.total_steps = total_steps
        self.eval_every = eval_every
        self.tx = make_optimizer(optimizer)
        self.schedule = make_schedule(optimizer, steps_per_epoch, total_steps)
        self.key = jax.random.fold_in(jax.random.key(seed), 1)
        evaluate = make_evaluate(network)
        if isinstance(dataset, StreamingDataset):
            steps = make_streamed_train_steps(network, self.tx, self.schedule, augment)
            self.feed: DeviceFeed | StreamFeed = StreamFeed(
                dataset, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                train_steps=steps, evaluate=evaluate,
            )
        else:
            steps = make_train_steps(network, self.tx, self.schedule, augment)
            params = jax.eval_shape(network.init, jax.random.key(0))[0]
            self.feed = DeviceFeed(
                dataset, batch_size=batch_size, total_steps=total_steps,
                eval_batch_size=eval_batch_size, seed=seed, train_steps=steps, evaluate=evaluate,
                max_fused=fused_steps_limit(params),
            )
        self._compiled: dict[Any, Any] = {}
        self.timing = Timing()

    def _compiled_fn(self, key: Any, jitted: Any, *args: Any, **static: Any) -> Any:
        """Compile ``jitted`` ahead of time once per ``key``, counting the seconds it takes."""
        if key not in self._compiled:
            start = time.perf_counter()
            self._compiled[key] = jitted.lower(*args, **static).compile()
            self.timing.compile += time.perf_counter() - start
        return self._compiled[key]

    def evaluate(self, params: Any, batch_stats: Any) -> dict[str, float]:
        """Loss and accuracy on every eval split (``val/…``, ``test/…``)."""
        start, compile_before = time.perf_counter(), self.timing.compile
        sums = self.feed.eval_sums(self._compiled_fn, params, batch_stats)
        metrics = {}
        for name, ((loss, correct), count) in jax.device_get(sums).items():
            metrics[f"{name}/loss"] = float(loss) / count
            metrics[f"{name}/accuracy"] = float(correct) / count
        self.timing.eval += time.perf_counter() - start - (self.timing.compile - compile_before)
        return metrics

    def train(
        self,
        params: Any,
        batch_stats: Any,
        mask: Any,
        start_step: int,
        snapshot_step: int | None = None,
        on_eval: EvalCallback | None = None,
    ) -> LevelResult:
        """Train from ``start_step`` to the end under ``mask``, evaluating on the cadence.

        ``params`` must already be masked. At ``snapshot_step`` (if the run passes it) a host
        copy of the weights is kept: the rewind point.
        """
        before = Timing(**self.timing.as_dict())
        state = TrainState.create(start_step, params, batch_stats, self.tx)
        device_mask = jax.tree.map(jnp.asarray, mask)
        history: list[dict[str, float]] = []
        snapshot = None
        points = eval_points(start_step, self.total_steps, self.eval_every, snapshot_step)
        step, loss = start_step, None
        for target in points:
            if target > step:
                compile_before, begin = self.timing.compile, time.perf_counter()
                state, loss = self.feed.run(
                    self._compiled_fn, state, device_mask, self.key, step, target - step
                )
                loss = float(loss)  # the one host sync of a training segment
                elapsed = time.perf_counter() - begin
                self.timing.train += elapsed - (self.timing.compile - compile_before)
                step = target
            if step == snapshot_step:
                snapshot = jax.device_get((state.params, state.batch_stats))
            if step % self.eval_every == 0 or step in (start_step, self.total_steps):
                record: dict[str, float] = {"iteration": step}
                if loss is not None:
                    record["train/loss"] = loss
                record.update(self.evaluate(state.params, state.batch_stats))
                history.append(record)
                if on_eval is not None:
                    on_eval(record)
        params_out, stats_out = jax.device_get((state.params, state.batch_stats))
        timing = Timing(**{k: v - getattr(before, k) for k, v in self.timing.as_dict().items()})
        return LevelResult(
            params_out, stats_out, history, snapshot, timing, self.total_steps - start_step
        )


def host_tree(tree: Any) -> Any:
    """A numpy copy of a pytree of arrays."""
    return jax.tree.map(np.asarray, tree)
