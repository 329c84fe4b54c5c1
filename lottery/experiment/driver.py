"""Iterative pruning with weight rewinding, level by level: the experiment driver.

Level 0 trains the dense network from θ_0 in the experiment's dense folder, shared by every
pruning setting of the same training (see :mod:`lottery.store.hashing`), and keeps θ_k, the
weights and BatchNorm statistics at the rewind step k, the moment training passes it. Every
level L >= 1 is two steps, each skipped when its output exists:

1. ``prune(L)``: the strategy prunes level L-1's final weights, giving mask_L, written first;
2. ``train(L)``: θ_k ⊙ mask_L trains from step k to the end with a fresh optimizer state, the
   learning-rate schedule going on from step k, and its own batch order and augmentation,
   drawn from (data_seed, L) (or level 0's with ``train.replay_data_order``).

k = 0 is the original lottery ticket (Frankle & Carbin 2019); k > 0 is rewinding (Frankle et
al. 2020). A level killed at any moment resumes from its newest checkpoint.

After a level L >= 1 is finished, its branches (``branches=[...]``: the controls and other
trainings from its mask, :mod:`lottery.branches`) train into ``level_L/branch_*``, each
resumable and skipped when finished, before level L+1 is pruned.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import jax
from omegaconf import OmegaConf

from lottery import distributed, interrupts
from lottery.atomic import this_process_writes
from lottery.config import Config, ConfigError, Interrupted, RunError
from lottery.experiment.branch_runner import BranchTrainer
from lottery.experiment.budget import over_budget
from lottery.experiment.errors import BrokenLevel, LevelDiverged, NothingLeftToPrune
from lottery.experiment.levels import LevelStart
from lottery.experiment.masks import Pruner, finished_weights
from lottery.experiment.plan import Plan
from lottery.experiment.reporting import print_finished, send_folder_to_loggers
from lottery.experiment.rewind import DenseLevel
from lottery.experiment.trainers import Trainers, training_inputs
from lottery.experiment.training import LevelTrainer
from lottery.logging import RunLogger, console
from lottery.pruning import apply_mask
from lottery.pruning.strategies import mask_updates
from lottery.store import (
    SUMMARY_FILE,
    ExperimentStore,
    Layout,
    ReplicateStore,
    dense_values,
    locked,
    remove_stale_temp_files,
    set_aside,
)
from lottery.train import Trainer, UpdateMask, host_tree
from lottery.train.replicas import ReplicaBatcher


class Experiment:
    """One replicate of an iterative pruning experiment, level by level."""

    def __init__(
        self,
        plan: Plan,
        loggers: list[RunLogger] | None = None,
        batcher: ReplicaBatcher | None = None,
        device: jax.Device | None = None,
        recorded_cfg: Config | None = None,
    ) -> None:
        self.plan = plan
        self.loggers = list(loggers or [])
        self.batcher = batcher
        # The config that config.yaml records: the command's, also for a seed of
        # ``train.replicas`` (else whichever seed's thread wrote first).
        self.recorded_cfg = plan.cfg if recorded_cfg is None else recorded_cfg
        cfg = plan.cfg
        self.store = ExperimentStore(cfg.results_root, cfg.name, plan.digest, plan.dense_digest)
        # A finished level's mask and weights must fit the network (else it is made again).
        layout = Layout.of(plan.init_params, plan.init_batch_stats)
        self.replicate: ReplicateStore = self.store.replicate(cfg.seed, layout)
        self.dense: ReplicateStore = self.store.dense_replicate(cfg.seed, layout)
        self.trainers = Trainers(plan, batcher, device)
        self.level_trainer = LevelTrainer(plan, self.trainers, self.loggers)
        self.dense_level = DenseLevel(
            plan, self.replicate, self.dense, self.trainers, self.level_trainer
        )
        self.pruner = Pruner(plan, self.replicate, self.dense, self.rewind_point)
        self.branches = BranchTrainer(
            plan,
            self.replicate,
            self.trainers,
            self.level_trainer,
            self.rewind_point,
            lambda folder: send_folder_to_loggers(self.loggers, plan.digest, folder),
        )
        self.level = 0

    @property
    def trainer(self) -> Trainer:
        """The experiment's trainer, built on first use (a finished run compiles nothing)."""
        return self.trainers.main

    def rewind_point(self, step: int | None = None) -> tuple[Any, Any]:
        """θ_k and its BatchNorm statistics (see :meth:`DenseLevel.rewind_point`)."""
        return self.dense_level.rewind_point(step)

    def train(self, level: int) -> dict[str, Any]:
        """Prune (if needed) and train level ``level`` >= 1 from the rewind point."""
        folder, mask, prune_seconds = self.pruner.prune(level)
        if folder.is_whole():  # killed between its last write and the rename
            folder.publish()
            distributed.barrier(f"level {level} published")
            return self.replicate.summary(level)
        plan = self.plan
        if plan.strategy.during_training:
            # The folder's mask.npz is replaced by the final mask just before the summary is
            # written: a level killed in between must start again from its true start.
            mask = self.replicate.mask(level - 1)
        if plan.cfg.pruning.start_from == "previous":  # prune, then fine-tune
            params, batch_stats = finished_weights(self.replicate, level - 1)
        else:
            params, batch_stats = self.rewind_point()
        start = LevelStart(plan.rewind_step, host_tree(apply_mask(params, mask)), batch_stats, mask)
        return self.level_trainer.train_into(
            folder, level, start, self._mask_update_hooks(), plan.digest, prune_seconds
        )

    def _mask_update_hooks(self) -> list[Any]:
        """The hook that updates the mask while training, for the methods that do."""
        plan = self.plan
        updates = mask_updates(
            plan.strategy,
            plan.strategy_settings,
            plan.prunable,
            plan.rewind_step,
            plan.total_steps,
        )
        if updates is None:
            return []
        steps, update = updates
        return [UpdateMask(steps, lambda run, trainer: update(training_inputs(run, trainer)))]

    def run(self) -> list[dict[str, Any]]:
        """Run every level not yet finished; returns the experiment's curve rows.

        Ctrl-C and a full disk end in one line (a :class:`RunError`): finished levels and
        the checkpoints of the unfinished one stay, and the same command resumes.
        """
        self.level = 0
        # Seeds training at once (a batcher) share the experiment's folders: each removes
        # only its own replicate's, and run_replicas the shared ones once all have stopped.
        folders = (
            self.shared_folders()
            if self.batcher is None
            else (self.replicate.path, self.dense.path)
        )
        made_here = [p for p in folders if not p.exists()]
        try:
            return self._run()
        except (LevelDiverged, ConfigError):  # a bad input found only once writing began
            remove_unfinished(made_here)
            raise
        except interrupts.Preempted as preempted:
            step = f" step {preempted.step:,}" if preempted.step is not None else ""
            preempted.where = f"level {self.level}{step}"
            raise
        except KeyboardInterrupt:
            last = self.trainers.last_step
            step = f" step {last:,}" if last is not None else ""
            raise Interrupted(
                f"interrupted at level {self.level}{step}; run the same command to resume "
                "(finished levels are kept, the level resumes from its newest checkpoint)"
            ) from None
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise RunError(
                f"the disk is full (writing {error.filename or self.store.path}); finished "
                "levels are intact: free some space and run the same command to resume"
            ) from None

    def shared_folders(self) -> tuple[Path, ...]:
        """The folders this experiment writes into that other runs may share."""
        cfg = self.plan.cfg
        results_root = Path(cfg.results_root).expanduser().resolve()
        return (self.store.path, self.store.dense_path, results_root / cfg.name, results_root)

    def _run(self) -> list[dict[str, Any]]:
        cfg, plan = self.plan.cfg, self.plan
        if this_process_writes():
            ensure_writable(Path(cfg.results_root))
        config_yaml = OmegaConf.to_yaml(OmegaConf.structured(self.recorded_cfg))
        self.store.write_config(config_yaml, plan.hashed, dense_values(plan.hashed))
        console.print(f"{plan.prefix}results: {self.store.path}")
        with locked(self.replicate.path):
            remove_stale_temp_files(self.replicate.path, older_than=60.0)
            remove_stale_temp_files(self.store.path)
            # Every process decides what to do from the store as process 0 left it; and
            # again after each step that process 0 writes (the barriers below).
            distributed.barrier("store ready")
            last = self._run_levels()
            if this_process_writes():
                from lottery.experiment.deployment import deploy_replicate  # lottery.deploy

                deploy_replicate(plan, self.store, self.replicate, last)
            rows = self.store.write_curve()
        for logger in self.loggers:
            logger.finish(rows)
        return rows

    def _run_levels(self) -> int:
        """Every level not yet finished, and its branches; the last level reached."""
        plan, levels = self.plan, self.plan.cfg.pruning.levels
        level = 0
        while level <= levels:
            self.level = level
            try:
                summary = self._level(level)
            except NothingLeftToPrune as stop:
                console.print(f"{plan.prefix}{stop}")
                break
            except BrokenLevel as broken:
                store = self.dense if broken.level == 0 else self.replicate
                set_aside(store.level_path(broken.level), "unreadable", str(broken)[:120])
                distributed.barrier(f"level {broken.level} set aside")
                level = broken.level
                continue
            distributed.barrier(f"level {level} finished")
            if self.replicate.is_done(level):
                send_folder_to_loggers(self.loggers, plan.digest, self.replicate.level_path(level))
            if summary is not None:
                print_finished(level, summary, prefix=plan.prefix)
                self.store.write_curve()
            if self.branches.train(level):
                self.store.write_curve()
            distributed.barrier(f"level {level} branches finished")
            drop = plan.cfg.pruning.max_accuracy_drop
            if over_budget(self.replicate, level, drop, levels, plan.prefix):
                break
            interrupts.raise_if_preempted()  # between levels: nothing unsaved
            level += 1
        return min(level, levels)

    def _level(self, level: int) -> dict[str, Any] | None:
        """Level ``level`` trained unless finished; its summary if this run trained it."""
        if level == 0:
            return self.dense_level.train()
        if self.replicate.is_done(level):
            return None
        return self.train(level)


def remove_unfinished(folders: list[Path]) -> None:
    """Remove folders this run made that hold no finished level (a run that diverged leaves
    nothing behind but what earlier runs finished)."""
    for folder in folders:
        if folder.exists() and not any(folder.rglob(SUMMARY_FILE)):
            shutil.rmtree(folder, ignore_errors=True)


def ensure_writable(root: Path) -> None:
    """Fail with one line if results cannot be written under ``root`` (before writing)."""
    root = root.expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        # The thread too: the seeds of ``train.replicas`` check at once, in one process.
        probe = root / f".write_test_{os.getpid()}_{threading.get_ident()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"results_root={str(root)!r} is not a writable folder ({reason}); "
            "choose another with results_root=PATH"
        ) from None
