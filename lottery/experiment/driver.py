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

import dataclasses
import errno
import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import OmegaConf

from lottery import distributed, interrupts
from lottery.atomic import atomic_write_json, this_process_writes
from lottery.branches import BranchInputs, BranchRun, branch_args
from lottery.config import Config, ConfigError, Interrupted, RunError
from lottery.config.validate import export_formats
from lottery.data import StreamingDataset
from lottery.data.augment import crop_flip
from lottery.experiment.budget import BUDGET_FILE, budget_verdict, describe_budget, val_accuracy
from lottery.experiment.levels import LevelStart, boundary_steps, train_level
from lottery.experiment.plan import Plan, prepare
from lottery.experiment.summary import environment, summarize
from lottery.logging import RunLogger, console, make_loggers
from lottery.pruning import apply_mask, count_alive, flatten, full_mask, prunable_paths
from lottery.pruning.strategies import PruneInputs, TrainingInputs, mask_updates
from lottery.store import (
    MAIN_BRANCH,
    ExperimentStore,
    Layout,
    PartialFolder,
    ReplicateStore,
    dense_values,
    folder_done,
    locked,
    read_summary,
    remove_stale_temp_files,
    set_aside,
    warn,
)
from lottery.store import (
    digest as digest_of,
)
from lottery.train import (
    AtSteps,
    DivergedError,
    RunState,
    Timing,
    Trainer,
    UpdateMask,
    host_tree,
)
from lottery.train.optim import make_schedule
from lottery.train.replicas import ReplicaBatcher

# The weights of a finished level in the sparse format of :mod:`lottery.deploy.sparse_format`.
SPARSE_PARAMS = "params_sparse.npz"


class BrokenLevel(Exception):
    """A finished level's files cannot be read back: it is set aside and made again (the
    same bits: training is a function of the config and seeds)."""

    def __init__(self, level: int, reason: str) -> None:
        super().__init__(reason)
        self.level = level


class LevelDiverged(RunError):
    """A level's training diverged (see :class:`DivergedError`)."""


class NothingLeftToPrune(Exception):
    """The strategy removes no weight any more: later levels would repeat the last one."""


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
        # Shared with the other seeds of ``train.replicas``; the device this seed trains on.
        self.batcher, self.device = batcher, device
        # The config that config.yaml records: the command's, also for a seed of
        # ``train.replicas`` (else whichever seed's thread wrote first).
        self.recorded_cfg = plan.cfg if recorded_cfg is None else recorded_cfg
        cfg = plan.cfg
        self.store = ExperimentStore(cfg.results_root, cfg.name, plan.digest, plan.dense_digest)
        # A finished level's mask and weights must fit the network (else it is made again).
        layout = Layout.of(plan.init_params, plan.init_batch_stats)
        self.replicate: ReplicateStore = self.store.replicate(cfg.seed, layout)
        self.dense: ReplicateStore = self.store.dense_replicate(cfg.seed, layout)
        self._trainer: Trainer | None = None
        self._other_trainers: dict[str, Trainer] = {}
        self._dense_figures: dict[str, Any] | None = None

    @property
    def trainer(self) -> Trainer:
        """Built on first use, so a finished experiment compiles nothing."""
        if self._trainer is None:
            self._trainer = self._make_trainer(self.plan.cfg.optimizer)
        return self._trainer

    def _make_trainer(self, optimizer: Any, network: Any = None) -> Trainer:
        plan, cfg = self.plan, self.plan.cfg
        return Trainer(
            network or plan.network,
            plan.dataset,
            optimizer,
            batch_size=cfg.train.batch_size,
            total_steps=plan.total_steps,
            steps_per_epoch=plan.steps_per_epoch,
            eval_batch_size=cfg.train.eval_batch_size,
            data_seed=plan.data_seed,
            augment=crop_flip if cfg.dataset.augment else None,
            precision=cfg.train.precision,
            data_parallel=cfg.train.data_parallel,
            batcher=self.batcher,
            device=self.device,
        )

    def trainer_for(self, optimizer: Any | None, network: Any = None) -> Trainer:
        """The experiment's trainer, or one for another optimizer or network (a branch's),
        built once."""
        optimizer = optimizer or self.plan.cfg.optimizer
        if optimizer == self.plan.cfg.optimizer and network is None:
            return self.trainer
        key = repr((optimizer, network))
        if key not in self._other_trainers:
            self._other_trainers[key] = self._make_trainer(optimizer, network)
        return self._other_trainers[key]

    # -- level 0 and the rewind point -----------------------------------------------------

    def _save_rewind_point(self, run: RunState) -> None:
        params, batch_stats = host_tree((run.state.params, run.state.batch_stats))
        self.dense.save_rewind_point(run.step, params, batch_stats)
        distributed.barrier(f"rewind point {run.step}")  # written (by process 0) for all

    def dense_level(self) -> dict[str, Any] | None:
        """Train level 0 in the dense folder unless done; link it into this experiment.

        Returns its summary if this run trained it, else None.
        """
        plan = self.plan
        summary = None
        with locked(self.dense.path):
            remove_stale_temp_files(self.dense.path, older_than=60.0)
            if not self.dense.is_done(0):
                folder = self.dense.partial_level(0)
                mask = self._prune_into(folder, lambda: full_mask(plan.init_params))
                # A trained model kept as loaded (init.train_level_0=false) starts at the
                # end: evaluated, not trained.
                first = 0 if plan.cfg.init.train_level_0 else plan.total_steps
                start = LevelStart(first, plan.init_params, plan.init_batch_stats, mask)
                rewind = AtSteps([plan.rewind_step], self._save_rewind_point)
                summary = self._train_into(folder, 0, start, [rewind], plan.dense_digest)
        newly_linked = not self.replicate.level_path(0).is_symlink()
        self.replicate.link_level(0, self.dense.level_path(0))
        if summary is None and newly_linked:
            console.print(
                f"{plan.prefix}level  0: reusing the dense training in "
                f"{self.store.dense_path.name} (same data, model, optimizer and training)"
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
        trainer = self.trainer
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

    # -- levels >= 1: prune, then train ----------------------------------------------------

    def _prune_into(self, folder: PartialFolder, make_mask: Any) -> Any:
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

    def _prune_inputs(
        self, level: int, previous: Any, previous_mask: Any, previous_stats: Any = None
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

    def prune(self, level: int) -> tuple[PartialFolder, Any, float]:
        """Write level ``level``'s mask first (unless written); (folder, mask, seconds)."""
        plan = self.plan
        folder = self.replicate.partial_level(level)
        begin = time.perf_counter()

        def make_mask() -> Any:
            try:
                previous, previous_stats = self.replicate.params(level - 1)
                previous_mask = self.replicate.mask(level - 1)
            except Exception as error:  # truncated or garbled files: redo that level
                raise BrokenLevel(level - 1, f"{type(error).__name__}: {error}") from None
            mask = plan.strategy.prune(
                self._prune_inputs(level, previous, previous_mask, previous_stats),
                plan.strategy_settings,
            )
            alive = count_alive(mask, plan.prunable)
            if not plan.strategy.during_training and alive == count_alive(
                previous_mask, plan.prunable
            ):
                raise NothingLeftToPrune(
                    f"stopped before level {level}: pruning removes no more weights "
                    f"({alive:,} left); levels {level}..{plan.cfg.pruning.levels} would repeat "
                    f"level {level - 1}"
                )
            return mask

        mask = self._prune_into(folder, make_mask)
        collapsed = [p for p in plan.prunable if not np.any(flatten(mask)[p])]
        if collapsed:
            warn(
                f"level {level}: {', '.join(collapsed)} has no weight left (layer collapse): "
                "the output no longer depends on the input through it"
            )
        return folder, mask, time.perf_counter() - begin

    def train(self, level: int) -> dict[str, Any]:
        """Prune (if needed) and train level ``level`` >= 1 from the rewind point."""
        folder, mask, prune_seconds = self.prune(level)
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
            try:
                params, batch_stats = self.replicate.params(level - 1)
            except Exception as error:  # truncated or garbled files: redo that level
                raise BrokenLevel(level - 1, f"{type(error).__name__}: {error}") from None
        else:
            params, batch_stats = self.rewind_point()
        start = LevelStart(plan.rewind_step, host_tree(apply_mask(params, mask)), batch_stats, mask)
        hooks = []
        updates = mask_updates(
            plan.strategy,
            plan.strategy_settings,
            plan.prunable,
            plan.rewind_step,
            plan.total_steps,
        )
        if updates is not None:
            steps, update = updates
            hooks.append(
                UpdateMask(steps, lambda run, trainer: update(training_inputs(run, trainer)))
            )
        return self._train_into(folder, level, start, hooks, plan.digest, prune_seconds)

    def _train_into(
        self,
        folder: PartialFolder,
        level: int,
        start: LevelStart,
        hooks: list[Any],
        digest: str,
        prune_seconds: float = 0.0,
        branch: BranchRun | None = None,
    ) -> dict[str, Any]:
        plan, wall = self.plan, time.perf_counter()
        if branch is not None and branch.network is not None:  # another network (small_dense)
            plan = dataclasses.replace(
                plan,
                network=branch.network,
                init_params=start.params,
                init_batch_stats=start.batch_stats,
                prunable=prunable_paths(start.params, plan.cfg.pruning.prunable),
            )
        trainer = self.trainer_for(
            branch.optimizer if branch else None, branch.network if branch else None
        )
        before = Timing(**trainer.timing.as_dict())
        try:
            result = train_level(
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
        begin_store = time.perf_counter()
        run = result.run
        mask, params, batch_stats = host_tree((run.mask, run.state.params, run.state.batch_stats))
        folder.save_weights(params, batch_stats)
        sizes = None
        if branch is None:
            if plan.strategy.during_training:
                folder.save_mask(mask)  # the mask the training ended with
            if this_process_writes():
                sizes = save_ticket_files(folder.path, params, mask)
        label = branch.label if branch else MAIN_BRANCH
        summary = summarize(plan, level, start.step, mask, run.history, digest=digest, branch=label)
        if sizes is not None:
            summary["size_on_disk"] = sizes
        if branch is None and plan.strategy.compactable:
            summary["compacted"] = self.compacted_figures(params, batch_stats, mask)
        if branch is not None:
            summary["branch_args"] = branch.args
            if branch.stream is not None:  # the data order it trained on, not the level's
                summary["data_stream"] = branch.stream
            if branch.finalize is not None:
                summary.update(branch.finalize(params, batch_stats))
        timing: dict[str, Any] = trainer.timing.since(before).as_dict()
        steps = plan.total_steps - (result.resumed_from or start.step)
        timing.update(
            prune=prune_seconds,
            checkpoint=result.checkpoint_seconds,
            checkpoints=result.checkpoints,
            resumed_from=result.resumed_from,
            steps_per_second=steps / timing["train"] if timing["train"] else None,
        )
        timing["store"] = time.perf_counter() - begin_store
        timing["wall"] = time.perf_counter() - wall
        summary["timing"] = timing
        summary["environment"] = environment()
        folder.finish(summary)
        return summary

    # -- branches -------------------------------------------------------------------------

    def _branch_inputs(self, level: int) -> BranchInputs:
        plan = self.plan
        mask = self.replicate.mask(level)

        def evaluate(params: Any, batch_stats: Any) -> dict[str, float]:
            return self.trainer.evaluate(params, batch_stats)

        # From the schedule itself: a rerun whose branches are all finished builds no trainer.
        schedule = make_schedule(plan.cfg.optimizer, plan.steps_per_epoch, plan.total_steps)
        final_lr = float(schedule(plan.total_steps - 1))
        return BranchInputs(
            plan,
            level,
            mask,
            (plan.cfg.seed, level),
            # The weights the level's mask was chosen from (one-shot: always level 0's).
            lambda: self.replicate.params(0 if plan.strategy.ranks_dense_weights else level - 1),
            lambda: self.replicate.params(level),
            self.rewind_point,
            evaluate,
            final_lr,
        )

    def branch_runs(self, level: int) -> list[tuple[BranchRun, str]]:
        """The branch trainings of a finished level, each with its folder's hash."""
        inputs = self._branch_inputs(level)
        runs = []
        for branch in self.plan.branches:
            for run in branch.runs(inputs, branch_args(self.plan.cfg, branch.name)):
                values = {"experiment": self.plan.digest, "branch": run.label, **run.args}
                runs.append((run, digest_of(values)))
        return runs

    def train_branches(self, level: int) -> list[dict[str, Any]]:
        """Train the branches of finished level ``level`` not yet finished; their summaries
        (of this run's trainings). Every finished branch is given to the loggers."""
        if not self.plan.branches or level == 0:
            return []
        trained = []
        for run, digest in self.branch_runs(level):
            folder = self.replicate.partial_branch(level, run.label, digest)
            if folder.is_whole():  # killed between its last write and the rename
                folder.publish()
                distributed.barrier(f"level {level} {run.label} published")
            # A branch of the experiment's network is checked against its layout too.
            layout = self.replicate.layout if run.network is None else None
            if not folder_done(folder.final, layout):
                params, batch_stats, mask = run.start()
                mask = self._prune_into(folder, lambda mask=mask: mask)
                start = LevelStart(run.start_step, host_tree(params), batch_stats, mask)
                try:
                    summary = self._train_into(
                        folder, level, start, [], self.plan.digest, branch=run
                    )
                except LevelDiverged as error:  # a control must not stop the main line
                    warn(f"{run.label}: {error} (this branch is skipped)")
                    continue
                trained.append(summary)
                print_finished(level, summary, run.label, self.plan.prefix)
            self._send_folder_to_loggers(folder.final)
        return trained

    def _send_folder_to_loggers(self, folder: Path) -> None:
        """Give a finished level's or branch's folder to the loggers."""
        summary = read_summary(folder)
        if self.loggers and summary is not None:
            summary["hash"] = self.plan.digest  # level 0 is named by this experiment too
            for logger in self.loggers:
                logger.log_level(summary, folder)

    def compacted_figures(self, params: Any, batch_stats: Any, mask: Any) -> dict[str, Any]:
        """The structured ticket compacted into a smaller network: parameters, bytes and
        median CPU latency at batch 1 and 256, beside the dense network's (measured once)."""
        from lottery.deploy import compact, inference_latency, parameter_count, size_on_disk
        from lottery.deploy.latency import FIGURE_BUDGET_S, LATENCY_BATCHES

        def figures(network: Any, weights: Any, stats: Any) -> dict[str, Any]:
            return {
                "params": parameter_count(weights),
                "bytes": size_on_disk(weights),
                **{
                    f"latency_ms_batch_{b}": 1e3
                    * inference_latency(network, weights, stats, b, budget_s=FIGURE_BUDGET_S)
                    for b in LATENCY_BATCHES
                },
            }

        plan = self.plan
        if self._dense_figures is None:
            self._dense_figures = figures(plan.network, plan.init_params, plan.init_batch_stats)
        small = figures(*compact(plan.network, params, batch_stats, mask))
        speedups = {
            f"speedup_batch_{b}": self._dense_figures[f"latency_ms_batch_{b}"]
            / small[f"latency_ms_batch_{b}"]
            for b in LATENCY_BATCHES
        }
        return {**small, "dense": self._dense_figures, **speedups}

    def _send_to_loggers(self, level: int) -> None:
        """Give a finished level (trained now or by an earlier run) to the loggers."""
        if self.replicate.is_done(level):
            self._send_folder_to_loggers(self.replicate.level_path(level))

    # -- the accuracy budget --------------------------------------------------------------

    def over_budget(self, level: int) -> bool:
        """With ``pruning.max_accuracy_drop``: whether level ``level`` fell past the budget
        (the run stops there; the level before is the answer, written to ``budget.json``).
        Judged on validation accuracy, the same way for levels trained now or before."""
        drop = self.plan.cfg.pruning.max_accuracy_drop
        if drop is None or level == 0:
            return False
        reference, current = val_accuracy(self.replicate, 0), val_accuracy(self.replicate, level)
        # Rounded: a drop of exactly the budget (61.2% to 60.2%) is within it.
        over = round(100 * (reference - current), 6) > drop
        if over or level == self.plan.cfg.pruning.levels:
            chosen = level - 1 if over else level
            verdict = budget_verdict(self.replicate, chosen, drop, level if over else None)
            atomic_write_json(self.replicate.path / BUDGET_FILE, verdict)
            console.print(f"{self.plan.prefix}{describe_budget(verdict)}")
        return over

    def deploy(self, last: int) -> None:
        """With ``deploy.*``: each finished level's deployment figures and the table, and
        the chosen level (the budget's, or the last finished) exported."""
        plan, deploy = self.plan, self.plan.cfg.deploy
        formats = export_formats(deploy)
        if not (deploy.measure or formats) or not this_process_writes():
            return
        from lottery.experiment import deployment

        levels = [level for level in range(last + 1) if self.replicate.is_done(level)]
        if not levels:
            return
        if deploy.measure:
            rows = deployment.measure_replicate(plan, self.replicate, levels)
            title = f"{plan.prefix}deployment of {plan.cfg.name} [{self.store.path.name}]"
            deployment.print_deployment(rows, title)
        if formats:
            budget = self.replicate.path / BUDGET_FILE
            judged = budget.is_file() and plan.cfg.pruning.max_accuracy_drop is not None
            chosen = json.loads(budget.read_text())["chosen_level"] if judged else None
            level = chosen if chosen in levels else levels[-1]
            for path in deployment.export_level(plan, self.replicate.level_path(level), formats):
                console.print(f"{plan.prefix}exported level {level}: {path}")

    # -- the whole run --------------------------------------------------------------------

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
            step = f" step {self.trainer.last_step:,}" if self._trainer is not None else ""
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
            level = 0
            while level <= cfg.pruning.levels:
                self.level = level
                try:
                    if level == 0:
                        summary = self.dense_level()
                    elif self.replicate.is_done(level):
                        summary = None
                    else:
                        summary = self.train(level)
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
                self._send_to_loggers(level)
                if summary is not None:
                    print_finished(level, summary, prefix=plan.prefix)
                    self.store.write_curve()
                if self.train_branches(level):
                    self.store.write_curve()
                distributed.barrier(f"level {level} branches finished")
                if self.over_budget(level):
                    break
                interrupts.raise_if_preempted()  # between levels: nothing unsaved
                level += 1
            self.deploy(min(level, cfg.pruning.levels))
            rows = self.store.write_curve()
        for logger in self.loggers:
            logger.finish(rows)
        return rows


def print_finished(
    level: int, summary: dict[str, Any], branch: str | None = None, prefix: str = ""
) -> None:
    """One console line for a level (or one of its branches) trained by this run."""
    name = f"{prefix}level {level:>2}" + (f" {branch}" if branch else "")
    console.print(
        f"{name}: {summary['weights_remaining_pct']:6.2f}% weights left, test accuracy "
        f"{100 * summary['test_accuracy']:.2f}% ({summary['timing']['wall']:.1f} s)"
    )


def remove_unfinished(folders: list[Path]) -> None:
    """Remove folders this run made that hold no finished level (a run that diverged leaves
    nothing behind but what earlier runs finished)."""
    for folder in folders:
        if folder.exists() and not any(folder.rglob("summary.json")):
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


def run(cfg: Config) -> tuple[ExperimentStore, list[dict[str, Any]]]:
    """Validate ``cfg`` and run (or finish) its experiment; returns the store and curve."""
    plan = prepare(cfg)
    if plan.early_stopping_off:
        console.print(
            f"note: early stopping is off ({plan.early_stopping_off} holds no validation data "
            "out): early_stop_* stay empty; set dataset.validation_size=N to judge it"
        )
    if cfg.train.replicas > 1:
        from lottery.experiment.replicas import run_replicas

        return run_replicas(plan)
    experiment = Experiment(plan, make_loggers(cfg, plan.digest))
    return experiment.store, experiment.run()


def training_inputs(run: Any, trainer: Any) -> TrainingInputs:
    """What a mask update at ``run.step`` may look at; the dense gradient computed once, and
    only if the update asks for it."""
    gradients = functools.cache(lambda: trainer.dense_gradients(run))
    return TrainingInputs(run.step, host_tree(run.state.params), host_tree(run.mask), gradients)


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


def save_ticket_files(folder: Path, params: Any, mask: Any) -> dict[str, int]:
    """Save the ticket's weights in the sparse format beside ``params.npz``; the bytes on
    disk of both, and of the dense weights as a plain npz, for the summary."""
    from lottery.deploy.sparse_format import dense_size, save_sparse

    sparse = save_sparse(folder / SPARSE_PARAMS, params, mask)
    return {
        "dense_npz_bytes": dense_size(params),
        "params_npz_bytes": (folder / "params.npz").stat().st_size,
        "sparse_bytes": sparse,
    }
