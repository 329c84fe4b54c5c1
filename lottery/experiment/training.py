"""A level's (or a branch's) training into its unfinished folder, and the files that make it
finished: weights, the ticket's files, the summary with its timings."""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any

from lottery.atomic import this_process_writes
from lottery.branches import BranchRun
from lottery.experiment.errors import LevelDiverged
from lottery.experiment.levels import LevelRun, LevelStart, train_level
from lottery.experiment.plan import Plan
from lottery.experiment.summary import environment, summarize
from lottery.experiment.trainers import Trainers
from lottery.logging import RunLogger
from lottery.pruning import prunable_paths
from lottery.store import MAIN_BRANCH, PartialFolder
from lottery.train import DivergedError, Timing, Trainer, host_tree


class LevelTrainer:
    """Trains levels and branches of one replicate into their folders."""

    def __init__(self, plan: Plan, trainers: Trainers, loggers: list[RunLogger]) -> None:
        self.plan, self.trainers, self.loggers = plan, trainers, loggers
        self._compacted: Any = None  # the structured tickets' figures, dense measured once

    def train_into(
        self,
        folder: PartialFolder,
        level: int,
        start: LevelStart,
        hooks: list[Any],
        digest: str,
        prune_seconds: float = 0.0,
        branch: BranchRun | None = None,
    ) -> dict[str, Any]:
        """Train ``folder``'s level (or ``branch``) from ``start`` (or its newest
        checkpoint) to the end, write its files and summary; the summary."""
        wall = time.perf_counter()
        plan = self._plan_of(branch, start)
        trainer = self.trainers.get(
            branch.optimizer if branch else None, branch.network if branch else None
        )
        before = Timing(**trainer.timing.as_dict())
        result = self._train(plan, trainer, folder, level, start, hooks, branch)
        begin_store = time.perf_counter()
        run = result.run
        mask, params, batch_stats = host_tree((run.mask, run.state.params, run.state.batch_stats))
        folder.save_weights(params, batch_stats)
        if branch is None and plan.strategy.during_training:
            folder.save_mask(mask)  # the mask the training ended with
        label = branch.label if branch else MAIN_BRANCH
        summary = summarize(plan, level, start.step, mask, run.history, digest=digest, branch=label)
        if branch is None:
            summary.update(self._ticket_figures(folder, params, batch_stats, mask))
        else:
            summary.update(branch_fields(branch, params, batch_stats))
        summary["timing"] = {
            **timings(plan, trainer.timing.since(before), result, start.step, prune_seconds),
            "store": time.perf_counter() - begin_store,
            "wall": time.perf_counter() - wall,
        }
        summary["environment"] = environment()
        folder.finish(summary)
        return summary

    def _plan_of(self, branch: BranchRun | None, start: LevelStart) -> Plan:
        """The plan, or a branch's that trains another network (small_dense)."""
        if branch is None or branch.network is None:
            return self.plan
        return dataclasses.replace(
            self.plan,
            network=branch.network,
            init_params=start.params,
            init_batch_stats=start.batch_stats,
            prunable=prunable_paths(start.params, self.plan.cfg.pruning.prunable),
        )

    def _train(
        self,
        plan: Plan,
        trainer: Trainer,
        folder: PartialFolder,
        level: int,
        start: LevelStart,
        hooks: list[Any],
        branch: BranchRun | None,
    ) -> LevelRun:
        try:
            return train_level(
                plan,
                trainer,
                folder,
                level,
                start,
                self.loggers,
                hooks,
                stream=branch.stream if branch else None,
                label=branch.label if branch else None,
            )
        except DivergedError as error:
            shutil.rmtree(folder.path, ignore_errors=True)  # it would only diverge again
            raise LevelDiverged(
                f"level {level} diverged: {error} (optimizer.lr={plan.cfg.optimizer.lr}); "
                "lower the learning rate or add optimizer.warmup; nothing of this level was kept "
                "as finished"
            ) from None

    def _ticket_figures(
        self, folder: PartialFolder, params: Any, batch_stats: Any, mask: Any
    ) -> dict[str, Any]:
        """A main-line level's sizes on disk (its sparse ticket file written) and, where the
        method's levels compact, the compacted network's figures."""
        from lottery.experiment import deployment  # lottery.deploy: imported when needed

        fields: dict[str, Any] = {}
        if this_process_writes():
            fields["size_on_disk"] = deployment.save_ticket_files(folder.path, params, mask)
        if self.plan.strategy.compactable:
            if self._compacted is None:
                self._compacted = deployment.CompactedFigures(self.plan)
            fields["compacted"] = self._compacted(params, batch_stats, mask)
        return fields


def branch_fields(branch: BranchRun, params: Any, batch_stats: Any) -> dict[str, Any]:
    """What a branch's summary adds: its arguments, its data order where it is not the
    level's, and the branch's own figures."""
    fields: dict[str, Any] = {"branch_args": branch.args}
    if branch.stream is not None:  # the data order it trained on, not the level's
        fields["data_stream"] = branch.stream
    if branch.finalize is not None:
        fields.update(branch.finalize(params, batch_stats))
    return fields


def timings(
    plan: Plan, spent: Timing, result: LevelRun, start_step: int, prune_seconds: float
) -> dict[str, Any]:
    """Where a level's time went (its summary's ``timing``, less store and wall)."""
    timing: dict[str, Any] = spent.as_dict()
    steps = plan.total_steps - (result.resumed_from or start_step)
    timing.update(
        prune=prune_seconds,
        checkpoint=result.checkpoint_seconds,
        checkpoints=result.checkpoints,
        resumed_from=result.resumed_from,
        steps_per_second=steps / timing["train"] if timing["train"] else None,
    )
    return timing
