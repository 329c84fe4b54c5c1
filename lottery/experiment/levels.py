"""Training one level (or branch) in its unfinished folder, resuming from its checkpoints."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lottery import distributed
from lottery.experiment.plan import Plan
from lottery.logging import LevelProgress, RunLogger, console
from lottery.pruning import sparsity_report
from lottery.store import PartialFolder
from lottery.train import Checkpoint, Evaluate, Hook, RunState, Trainer
from lottery.train.checkpoint import Checkpointer
from lottery.train.hooks import multiples


@dataclass
class LevelStart:
    """Where a level's training starts when it has no checkpoint: step, weights, mask."""

    step: int
    params: Any  # already masked
    batch_stats: Any
    mask: Any


@dataclass
class LevelRun:
    """A level's training as it ended, with what it cost."""

    run: RunState
    resumed_from: int | None
    checkpoint_seconds: float = 0.0
    checkpoints: int = 0


def boundary_steps(plan: Plan, start: int, end: int) -> set[int]:
    """The steps at which level training stops anyway (evaluations, step-cadence checkpoints).

    Training again to a step (the rewind point of a finished level 0) stops at the same
    steps, so it computes the same bits.
    """
    steps = {start, end, *multiples(plan.eval_every, start, end)}
    if plan.checkpoint_steps:
        steps |= {s for s in multiples(plan.checkpoint_steps, start, end) if s < end}
    return steps


class AgreedCheckpoint(Checkpoint):
    """A checkpoint on a time cadence that every process of the experiment saves at the
    same step (a save is a collective of all of them): due when it is due by any one's
    clock (:func:`lottery.distributed.any_process`)."""

    def __call__(self, run: RunState, trainer: Trainer) -> None:
        elapsed = time.monotonic() - self.last_save
        if distributed.any_process(elapsed >= (self.every_seconds or 0.0)):
            self.save_now(run)


def checkpoint_hook(plan: Plan, checkpointer: Checkpointer) -> Checkpoint:
    """Checkpoints at the configured cadence (steps, or time at evaluations)."""
    if plan.checkpoint_steps:
        return Checkpoint(checkpointer, every_steps=plan.checkpoint_steps)
    return AgreedCheckpoint(
        checkpointer, every_seconds=plan.checkpoint_seconds, boundaries=plan.eval_every
    )


def train_level(
    plan: Plan,
    trainer: Trainer,
    folder: PartialFolder,
    level: int,
    start: LevelStart,
    loggers: Sequence[RunLogger] = (),
    hooks: Sequence[Hook] = (),
    *,
    stream: int | None = None,
    label: str | None = None,
) -> LevelRun:
    """Train ``level`` to the end in ``folder``: from its newest readable checkpoint if it
    has one (saying so in one line), else from ``start``. ``hooks`` run after evaluation
    and before the checkpoint at a step. ``stream`` replaces the level's data stream and
    ``label`` names a branch in messages."""
    trainer.use_data_stream(plan.data_stream(level) if stream is None else stream)
    name = f"{plan.prefix}level {level}" + (f" {label}" if label else "")
    checkpointer = Checkpointer(folder.checkpoint_dir, plan.cfg.train.keep_checkpoints)
    try:
        run = trainer.start(start.step, start.params, start.batch_stats, start.mask)
        restored = checkpointer.restore_latest(run)
        resumed_from = None
        if restored is not None:
            run, resumed_from = restored, restored.step
            console.print(f"{name}: resuming from step {run.step:,}")
        folder.write_metrics(run.history)
        weights_pct = sparsity_report(start.mask, plan.prunable)["weights_remaining_pct"]
        for logger in loggers:
            logger.begin_level(level, weights_pct, folder.final)
        with LevelProgress(
            level, weights_pct, start.step, plan.total_steps, plan.cfg.progress, plan.prefix
        ) as bar:

            def on_record(record: dict[str, float]) -> None:
                folder.log(record)
                bar.update(record)
                for logger in loggers:
                    logger.log_eval(level, record)

            saver = checkpoint_hook(plan, checkpointer)
            evaluate = Evaluate(plan.eval_every, on_record, first=start.step)
            all_hooks = [evaluate, *hooks, saver]
            trainer.train(run, plan.total_steps, all_hooks)
        return LevelRun(run, resumed_from, saver.seconds, saver.saves)
    finally:
        checkpointer.close()
        folder.close()
