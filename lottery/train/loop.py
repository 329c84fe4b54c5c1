"""The training loop: ``train(run, until, hooks)`` from any state to a step, with hooks.

A :class:`RunState` is everything a stretch of training carries (the :class:`TrainState`, the
mask, the evaluations so far, the training loss since the last evaluation): a checkpoint
holds exactly it, so a run restored from one goes on as if it had never stopped.

Hooks ask for the steps they want to be called at (evaluation, the rewind point, a
checkpoint, a mask update); between two such steps the loop runs one fused, jit-compiled
stretch of training (``lax.scan``), so the hot path is what it was without hooks. The steps
a hook asks for are absolute (multiples of a cadence, fixed steps), never relative to where a
run started, so a resumed run cuts its training into the same stretches as an uninterrupted
one and computes the same bits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from lottery import distributed, interrupts
from lottery.config import ConfigError, OptimizerConfig
from lottery.data import Dataset, StreamingDataset
from lottery.models import Network
from lottery.train.feeds import DeviceFeed, StreamFeed
from lottery.train.optim import make_optimizer, make_schedule
from lottery.train.replicas import ReplicaBatcher
from lottery.train.state import TrainState
from lottery.train.steps import (
    Augment,
    fused_steps_limit,
    make_dense_gradient,
    make_evaluate,
    make_replica_train_steps,
    make_streamed_train_steps,
    make_train_steps,
)


@dataclass
class Timing:
    """Seconds spent per phase; compile time is counted apart from training."""

    compile: float = 0.0
    train: float = 0.0
    eval: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"compile": self.compile, "train": self.train, "eval": self.eval}

    def since(self, before: Timing) -> Timing:
        return Timing(
            self.compile - before.compile, self.train - before.train, self.eval - before.eval
        )


@dataclass
class UnfinishedStretch:
    """The steps of a stretch trained before it was stopped: where it began, and each step's
    loss. A run resumed from it trains the stretch's other steps and combines their losses
    with these as the uninterrupted stretch would, so it computes the same bits."""

    start: int
    losses: list[float]


@dataclass
class RunState:
    """What a training run carries from hook to hook; a checkpoint saves all of it."""

    step: int  # the host's copy of ``state.step`` (reading the device's would sync)
    state: TrainState
    mask: Any  # pytree of bools shaped like the params, on the device
    history: list[dict[str, float]] = field(default_factory=list)
    # Training loss summed over the steps since the last evaluation, and their number.
    loss_sum: float = 0.0
    loss_steps: int = 0
    # A stretch stopped before its end (the job preempted between two of its steps).
    unfinished: UnfinishedStretch | None = None

    def take_train_loss(self) -> float | None:
        """The mean training loss since the last call (None if no step ran), and reset it."""
        if not self.loss_steps:
            return None
        mean = self.loss_sum / self.loss_steps
        self.loss_sum, self.loss_steps = 0.0, 0
        return mean


# A mean cross-entropy above this many nats means the run has diverged: it takes logits a
# million apart, where a fresh network starts near ln(classes) (2.3 for ten classes).
DIVERGED_LOSS = 1e6


class DivergedError(RuntimeError):
    """Training produced a non-finite or exploding loss: the run stops (one line) instead of
    going on to prune and report NaN or meaningless weights."""

    def __init__(self, first: int, last: int, loss: float) -> None:
        super().__init__(
            f"the training loss became {loss} between steps {first:,} and {last:,}"
        )
        self.first, self.last, self.loss = first, last, loss


class Hook(Protocol):
    """Something done at chosen steps of training."""

    def steps(self, start: int, end: int) -> Iterable[int]:
        """The steps in ``[start, end]`` at which to be called."""

    def __call__(self, run: RunState, trainer: Trainer) -> None:
        """Act at ``run.step`` (may replace ``run.mask``; must not replace ``run.state``)."""


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
        eval_batch_size: int,
        data_seed: int,
        augment: Augment | None = None,
        precision: str = "fp32",
        data_parallel: bool = False,
        batcher: ReplicaBatcher | None = None,
        device: jax.Device | None = None,
    ) -> None:
        self.network = network
        # Replicas (``train.replicas``): stretches go through the batcher, which runs those of
        # the same ``kind`` (trainers computing the same steps) on the same device as one
        # vmapped call. A replica's state and data live on its ``device``.
        self.batcher = batcher
        self.kind = repr((optimizer, network))
        self.device = device
        # Where the state and data go: one device, or replicated for data parallelism.
        self.placement: jax.sharding.Sharding | None = (
            None if device is None else jax.sharding.SingleDeviceSharding(device)
        )
        self.total_steps = total_steps
        self.data_seed = data_seed
        self.tx = make_optimizer(optimizer)
        self.schedule = make_schedule(optimizer, steps_per_epoch, total_steps)
        self._dense_gradient = make_dense_gradient(network, augment, precision)
        sharding = batch_sharding(batch_size) if data_parallel else None
        if sharding is not None:  # everything else replicated on the same devices
            self.placement = jax.sharding.NamedSharding(
                sharding.mesh, jax.sharding.PartitionSpec()
            )
        if batcher is not None and isinstance(dataset, StreamingDataset):
            raise ConfigError("train.replicas needs a dataset held on the device")
        if batcher is not None:
            self.replica_steps = make_replica_train_steps(
                network, self.tx, self.schedule, augment, precision
            )
        self.feed = self._make_feed(
            dataset, batch_size, eval_batch_size, augment, precision, sharding
        )
        self.use_data_stream(0)
        self.last_step = 0  # the last step trained to, for messages (Ctrl-C)
        self._compiled: dict[Any, Any] = {}
        self.timing = Timing()

    def _make_feed(
        self,
        dataset: Dataset | StreamingDataset,
        batch_size: int,
        eval_batch_size: int,
        augment: Augment | None,
        precision: str,
        sharding: jax.sharding.NamedSharding | None,
    ) -> DeviceFeed | StreamFeed:
        """The feed of the training steps: streamed batches, or a dataset on the device
        whose batches are gathered inside the compiled steps."""
        network, evaluate = self.network, make_evaluate(self.network)
        if isinstance(dataset, StreamingDataset):
            steps = make_streamed_train_steps(network, self.tx, self.schedule, augment, precision)
            return StreamFeed(
                dataset, batch_size=batch_size, eval_batch_size=eval_batch_size,
                train_steps=steps, evaluate=evaluate, batch_sharding=sharding,
            )
        steps = make_train_steps(network, self.tx, self.schedule, augment, precision, sharding)
        params = jax.eval_shape(network.init, jax.random.key(0))[0]
        return DeviceFeed(
            dataset, batch_size=batch_size, total_steps=self.total_steps,
            eval_batch_size=eval_batch_size, train_steps=steps, evaluate=evaluate,
            max_fused=fused_steps_limit(params), placement=self.placement,
        )

    def use_data_stream(self, stream: int) -> None:
        """Draw batch order and augmentation from ``(data_seed, stream)``; a level is a stream.

        Both are functions of (data_seed, stream, step) only, so any stretch of a level can be
        trained again, or resumed, and see the same data.
        """
        self.stream = stream
        self.feed.use_stream(self.data_seed, stream)
        base = jax.random.fold_in(jax.random.key(self.data_seed), 1)
        self.key = jax.random.fold_in(base, stream)

    def init_state(self, step: int, params: Any, batch_stats: Any) -> TrainState:
        """A state at ``step`` with a fresh optimizer state (``params`` already masked)."""
        return TrainState.create(step, params, batch_stats, self.tx)

    def start(self, step: int, params: Any, batch_stats: Any, mask: Any) -> RunState:
        """A fresh :class:`RunState` at ``step``: given weights, fresh optimizer, no history."""
        device_mask = jax.tree.map(jnp.asarray, mask)
        state = self.init_state(step, params, batch_stats)
        if self.placement is not None:
            state, device_mask = jax.device_put((state, device_mask), self.placement)
        return RunState(step, state, device_mask)

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

    def dense_gradients(self, run: RunState) -> Any:
        """The loss gradient of every weight, pruned ones included, at ``run``'s weights on
        the batch its next step trains on, augmented as that step will augment it (numpy)."""
        x, y = self.feed.batch_at(run.step)
        grads = self._dense_gradient(
            run.state.params, run.state.batch_stats, x, y, self.key, run.step
        )
        return host_tree(grads)

    def train(self, run: RunState, until: int, hooks: Sequence[Hook] = ()) -> RunState:
        """Train ``run`` to step ``until``, calling each hook at the steps it asks for.

        Hooks run in the order given when several want the same step. Training between two
        consecutive hook steps is one fused stretch (one host sync, for its loss).
        """
        wanted = [
            {s for s in hook.steps(run.step, until) if run.step <= s <= until} for hook in hooks
        ]
        for target in sorted(set().union(*wanted, {until})):
            if target > run.step:
                begin_step = run.step if run.unfinished is None else run.unfinished.start
                num_steps = target - begin_step  # the whole stretch, resumed or not
                compile_before, begin = self.timing.compile, time.perf_counter()
                if self.batcher is not None:
                    run.state, loss = self.batcher.run(self, run.state, run.mask, num_steps)
                else:
                    run.state, loss = self._run_stretch(run, target)
                if loss is None:  # stopped between two steps: saved there, and raised
                    self.save_now(run, hooks)
                    interrupts.raise_if_preempted(run.step)
                run.unfinished = None
                loss = float(loss)  # the one host sync of a stretch
                if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                    raise DivergedError(run.step, target, loss)
                run.loss_sum += loss * num_steps
                self.last_step = target
                run.loss_steps += num_steps
                elapsed = time.perf_counter() - begin
                self.timing.train += elapsed - (self.timing.compile - compile_before)
                run.step = target
                interrupts.raise_if_requested()  # a Ctrl-C whose KeyboardInterrupt was lost
            for hook, steps in zip(hooks, wanted, strict=True):
                if target in steps:
                    hook(run, self)
            # One process of several: all save, or none (a save is a collective of all).
            if target < until and distributed.any_process(interrupts.preemption_requested()):
                self.save_now(run, hooks)
                interrupts.raise_if_preempted(run.step)
        return run

    def _run_stretch(self, run: RunState, target: int) -> tuple[Any, Any]:
        """Train ``run`` to ``target``: its state and the stretch's mean loss, or (its state,
        None) with ``run.step`` and ``run.unfinished`` set where it stopped between two
        steps, the job being preempted (:mod:`lottery.interrupts`).

        Only a feed that calls one step at a time can stop between steps (streamed data,
        convolutional networks on the CPU: the long steps), and only in one process (several
        would have to agree at every step); a fused stretch stops at its end."""
        unfinished = run.unfinished
        stoppable = getattr(self.feed, "one_step_per_call", False) and jax.process_count() == 1
        state, loss, losses = self.feed.run(
            self._compiled_fn, run.state, run.mask, self.key, run.step, target - run.step,
            stop=interrupts.preemption_requested if stoppable else None,
            earlier=[] if unfinished is None else unfinished.losses,
        )
        if loss is None:
            start = run.step if unfinished is None else unfinished.start
            run.step = start + len(losses)
            run.unfinished = UnfinishedStretch(start, losses)
            self.last_step = run.step
        return state, loss

    def save_now(self, run: RunState, hooks: Sequence[Hook]) -> None:
        """Have the hooks that save the run (those with ``save_now``) save it at this step:
        the job is being stopped, and the stretch just trained is all that is not saved."""
        for hook in hooks:
            save = getattr(hook, "save_now", None)
            if save is not None:
                save(run)


def host_tree(tree: Any) -> Any:
    """A numpy copy of a pytree of arrays (replicated ones too when they span several
    processes: each process reads its own copy)."""
    return jax.tree.map(np.asarray, tree)


def batch_sharding(batch_size: int) -> jax.sharding.NamedSharding:
    """A batch axis over every device (data parallelism): the local ones, and those of the
    other processes when this is one process of several (:mod:`lottery.distributed`); one
    ConfigError line if the batch does not split evenly."""
    devices = jax.devices()
    processes = jax.process_count()
    where = "local devices" if processes == 1 else f"devices of the {processes} processes"
    if batch_size % len(devices):
        raise ConfigError(
            f"train.batch_size={batch_size} does not split over the {len(devices)} {where} "
            f"of train.data_parallel=true; choose a multiple of {len(devices)}"
        )
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
