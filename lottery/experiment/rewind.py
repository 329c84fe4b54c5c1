"""Level 0 and the rewind point: the dense training, shared by every pruning setting of the
same training, and θ_k, kept the moment it passes the rewind step k."""

from __future__ import annotations

from typing import Any

from lottery import distributed
from lottery.experiment.levels import LevelStart, boundary_steps
from lottery.experiment.masks import write_mask_once
from lottery.experiment.plan import Plan
from lottery.experiment.trainers import Trainers
from lottery.experiment.training import LevelTrainer
from lottery.logging import console
from lottery.pruning import full_mask
from lottery.store import ReplicateStore, locked, remove_stale_temp_files
from lottery.train import AtSteps, RunState, host_tree


class DenseLevel:
    """Level 0 of one replicate, trained in the experiment's dense folder."""

    def __init__(
        self,
        plan: Plan,
        replicate: ReplicateStore,
        dense: ReplicateStore,
        trainers: Trainers,
        level_trainer: LevelTrainer,
    ) -> None:
        self.plan, self.replicate, self.dense = plan, replicate, dense
        self.trainers, self.level_trainer = trainers, level_trainer

    def train(self) -> dict[str, Any] | None:
        """Train level 0 in the dense folder unless done; link it into this experiment.

        Returns its summary if this run trained it, else None.
        """
        plan = self.plan
        summary = None
        with locked(self.dense.path):
            remove_stale_temp_files(self.dense.path, older_than=60.0)
            if not self.dense.is_done(0):
                folder = self.dense.partial_level(0)
                mask = write_mask_once(folder, lambda: full_mask(plan.init_params))
                # A trained model kept as loaded (init.train_level_0=false) starts at the
                # end: evaluated, not trained.
                first = 0 if plan.cfg.init.train_level_0 else plan.total_steps
                start = LevelStart(first, plan.init_params, plan.init_batch_stats, mask)
                rewind = AtSteps([plan.rewind_step], self._save_rewind_point)
                summary = self.level_trainer.train_into(
                    folder, 0, start, [rewind], plan.dense_digest
                )
        newly_linked = not self.replicate.level_path(0).is_symlink()
        self.replicate.link_level(0, self.dense.level_path(0))
        if summary is None and newly_linked:
            console.print(
                f"{plan.prefix}level  0: reusing the dense training in "
                f"{self.dense.path.parent.name} (same data, model, optimizer and training)"
            )
        return summary

    def rewind_point(self, step: int | None = None) -> tuple[Any, Any]:
        """θ_k (k = ``step``, by default the rewind step) and its BatchNorm statistics; made
        again from θ_0 if the file is missing.

        Training to step k is a function of the seeds, so level 0's first k steps are run
        again (stopping at the same steps as level 0 did) and give the same bits.
        """
        plan = self.plan
        k = plan.rewind_step if step is None else step
        point = self.dense.rewind_point(k)
        if point is not None:
            return point
        console.print(
            f"{plan.prefix}level  0: making the rewind point at step {k:,} (training to it again)"
        )
        trainer = self.trainers.main
        trainer.use_data_stream(plan.data_stream(0))
        run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
        # Level 0 also stopped at the experiment's rewind step (to save it there).
        level_0_stops = boundary_steps(plan, 0, plan.total_steps) | {plan.rewind_step}
        stops = AtSteps(level_0_stops, lambda run: None)
        with locked(self.dense.path):
            trainer.train(run, k, [stops, AtSteps([k], self._save_rewind_point)])
        point = self.dense.rewind_point(k)
        assert point is not None
        return point

    def _save_rewind_point(self, run: RunState) -> None:
        params, batch_stats = host_tree((run.state.params, run.state.batch_stats))
        self.dense.save_rewind_point(run.step, params, batch_stats)
        distributed.barrier(f"rewind point {run.step}")  # written (by process 0) for all
