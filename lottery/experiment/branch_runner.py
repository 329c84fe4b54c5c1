"""The branches of a finished level (``branches=[...]``, :mod:`lottery.branches`): each
trained from the level's mask into ``level_L/branch_<name>_<hash>/``, resumable and skipped
when finished, before the next level is pruned."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lottery import distributed
from lottery.branches import BranchInputs, BranchRun, branch_args
from lottery.experiment.errors import LevelDiverged
from lottery.experiment.levels import LevelStart
from lottery.experiment.masks import write_mask_once
from lottery.experiment.plan import Plan
from lottery.experiment.reporting import print_finished
from lottery.experiment.trainers import Trainers
from lottery.experiment.training import LevelTrainer
from lottery.store import ReplicateStore, folder_done, warn
from lottery.store import digest as digest_of
from lottery.train import host_tree
from lottery.train.optim import make_schedule


class BranchTrainer:
    """Trains the branches of one replicate's finished levels."""

    def __init__(
        self,
        plan: Plan,
        replicate: ReplicateStore,
        trainers: Trainers,
        level_trainer: LevelTrainer,
        rewind_point: Callable[..., tuple[Any, Any]],
        send_to_loggers: Callable[[Path], None],
    ) -> None:
        self.plan, self.replicate = plan, replicate
        self.trainers, self.level_trainer = trainers, level_trainer
        self.rewind_point, self.send_to_loggers = rewind_point, send_to_loggers

    def runs(self, level: int) -> list[tuple[BranchRun, str]]:
        """The branch trainings of a finished level, each with its folder's hash."""
        inputs = self._inputs(level)
        runs = []
        for branch in self.plan.branches:
            for run in branch.runs(inputs, branch_args(self.plan.cfg, branch.name)):
                values = {"experiment": self.plan.digest, "branch": run.label, **run.args}
                runs.append((run, digest_of(values)))
        return runs

    def train(self, level: int) -> list[dict[str, Any]]:
        """Train the branches of finished level ``level`` not yet finished; their summaries
        (of this run's trainings). Every finished branch is given to the loggers."""
        if not self.plan.branches or level == 0:
            return []
        trained = []
        for run, digest in self.runs(level):
            folder = self.replicate.partial_branch(level, run.label, digest)
            if folder.is_whole():  # killed between its last write and the rename
                folder.publish()
                distributed.barrier(f"level {level} {run.label} published")
            # A branch of the experiment's network is checked against its layout too.
            layout = self.replicate.layout if run.network is None else None
            if not folder_done(folder.final, layout):
                params, batch_stats, mask = run.start()
                mask = write_mask_once(folder, lambda mask=mask: mask)
                start = LevelStart(run.start_step, host_tree(params), batch_stats, mask)
                try:
                    summary = self.level_trainer.train_into(
                        folder, level, start, [], self.plan.digest, branch=run
                    )
                except LevelDiverged as error:  # a control must not stop the main line
                    warn(f"{run.label}: {error} (this branch is skipped)")
                    continue
                trained.append(summary)
                print_finished(level, summary, run.label, self.plan.prefix)
            self.send_to_loggers(folder.final)
        return trained

    def _inputs(self, level: int) -> BranchInputs:
        from lottery.experiment.deployment import scaled_network  # lottery.deploy: when needed

        plan, replicate = self.plan, self.replicate

        def evaluate(params: Any, batch_stats: Any) -> dict[str, float]:
            return self.trainers.main.evaluate(params, batch_stats)

        # From the schedule itself: a rerun whose branches are all finished builds no trainer.
        schedule = make_schedule(plan.cfg.optimizer, plan.steps_per_epoch, plan.total_steps)
        return BranchInputs(
            plan,
            level,
            replicate.mask(level),
            (plan.cfg.seed, level),
            # The weights the level's mask was chosen from (one-shot: always level 0's).
            lambda: replicate.params(0 if plan.strategy.ranks_dense_weights else level - 1),
            lambda: replicate.params(level),
            self.rewind_point,
            evaluate,
            float(schedule(plan.total_steps - 1)),
            narrower=scaled_network,
        )
