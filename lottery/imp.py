"""Iterative magnitude pruning with weight rewinding: the experiment driver.

Level 0 trains the dense network from θ_0 and keeps θ_k, the weights (and BatchNorm
statistics) at the rewind step k. Every level L ≥ 1 prunes the previous level's final
weights by magnitude, giving mask_L, then trains θ_k ⊙ mask_L from step k to the end with
a fresh optimizer state, the learning-rate schedule going on from step k and the batches
of steps k..T being the ones level 0 saw. k = 0 is the original lottery ticket (Frankle &
Carbin 2019); k > 0 is rewinding (Frankle et al. 2020).

Finished levels are read back from the store instead of trained again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
from omegaconf import OmegaConf

from lottery import data, models
from lottery.config import Config, ConfigError, to_iterations, validate
from lottery.data.augment import crop_flip
from lottery.logging import LevelProgress, RunLogger, console, make_loggers
from lottery.pruning import (
    apply_mask,
    full_mask,
    magnitude_prune,
    prunable_paths,
    sparsity_report,
)
from lottery.store import ExperimentStore, ReplicateStore, experiment_hash, hashed_values
from lottery.train import LevelResult, Trainer, host_tree
from lottery.train.optim import make_optimizer, make_schedule


@dataclass
class Plan:
    """Everything a run needs, checked before anything is written."""

    cfg: Config
    dataset: data.Dataset | data.StreamingDataset
    network: models.Network
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    rewind_step: int
    init_params: Any
    init_batch_stats: Any
    prunable: list[str]
    digest: str


def prepare(cfg: Config) -> Plan:
    """Validate the config against the data and model; raise :class:`ConfigError` if bad."""
    validate(cfg)
    data.check_name(cfg.dataset.name)
    models.check_name(cfg.model.name)
    dataset = data.load(cfg.dataset)
    batch = cfg.train.batch_size
    if batch > dataset.num_train:
        raise ConfigError(
            f"train.batch_size={batch} is larger than the {dataset.num_train} training examples "
            f"of {cfg.dataset.name}; choose a smaller batch"
        )
    steps_per_epoch = dataset.num_train // batch
    total = to_iterations(cfg.train.steps, steps_per_epoch, "train.steps")
    eval_every = to_iterations(cfg.train.eval_every, steps_per_epoch, "train.eval_every")
    rewind = to_iterations(cfg.pruning.rewind_step, steps_per_epoch, "pruning.rewind_step")
    if rewind >= total:
        raise ConfigError(
            f"pruning.rewind_step={cfg.pruning.rewind_step!r} ({rewind} iterations) is at or past "
            f"the end of training (train.steps={cfg.train.steps!r} = {total} iterations); "
            f"choose a rewind step below {total}"
        )
    make_optimizer(cfg.optimizer)
    make_schedule(cfg.optimizer, steps_per_epoch, total)
    network = models.build(cfg.model, dataset.input_shape, dataset.num_classes)
    params, batch_stats = network.init(jax.random.fold_in(jax.random.key(cfg.seed), 0))
    params, batch_stats = host_tree(params), host_tree(batch_stats)
    prunable = prunable_paths(params, cfg.pruning.prunable)
    # Checks pruning.layer_fractions against the layers (a mask that prunes nothing).
    magnitude_prune(
        params,
        full_mask(params),
        prunable,
        cfg.pruning.scope,
        0.0,
        dict(cfg.pruning.layer_fractions),
    )
    return Plan(
        cfg,
        dataset,
        network,
        steps_per_epoch,
        total,
        eval_every,
        rewind,
        params,
        batch_stats,
        prunable,
        experiment_hash(cfg),
    )


def summarize(plan: Plan, level: int, start: int, mask: Any, result: LevelResult) -> dict[str, Any]:
    """The level's ``summary.json`` (without timings, which the caller adds)."""
    history = result.history
    final = history[-1]
    best = max(history, key=lambda r: r["test/accuracy"])
    summary: dict[str, Any] = {
        "experiment": plan.cfg.name,
        "hash": plan.digest,
        "replicate": plan.cfg.seed,
        "level": level,
        "start_iteration": start,
        "train_iterations": plan.total_steps - start,
        "test_accuracy": final["test/accuracy"],
        "test_loss": final["test/loss"],
        "best_test_accuracy": best["test/accuracy"],
        "best_test_iteration": best["iteration"],
        "early_stop_iteration": None,
        "early_stop_val_loss": None,
        "early_stop_test_accuracy": None,
        **sparsity_report(mask, plan.prunable),
    }
    if "val/loss" in final:
        early = min(history, key=lambda r: r["val/loss"])  # first minimum on ties
        summary["early_stop_iteration"] = early["iteration"]
        summary["early_stop_val_loss"] = early["val/loss"]
        summary["early_stop_test_accuracy"] = early["test/accuracy"]
    return summary


class Experiment:
    """One replicate of an IMP experiment, level by level."""

    def __init__(self, plan: Plan, loggers: list[RunLogger] | None = None) -> None:
        self.plan = plan
        self.loggers = list(loggers or [])
        cfg = plan.cfg
        self.store = ExperimentStore(cfg.results_root, cfg.name, plan.digest)
        self.replicate: ReplicateStore = self.store.replicate(cfg.seed)
        self._trainer: Trainer | None = None

    @property
    def trainer(self) -> Trainer:
        """Built on first use, so a finished experiment compiles nothing."""
        if self._trainer is None:
            plan, cfg = self.plan, self.plan.cfg
            self._trainer = Trainer(
                plan.network,
                plan.dataset,
                cfg.optimizer,
                batch_size=cfg.train.batch_size,
                total_steps=plan.total_steps,
                steps_per_epoch=plan.steps_per_epoch,
                eval_every=plan.eval_every,
                eval_batch_size=cfg.train.eval_batch_size,
                seed=cfg.seed,
                augment=crop_flip if cfg.dataset.augment else None,
            )
        return self._trainer

    def starting_point(self, level: int) -> tuple[Any, Any, Any, int, float]:
        """(mask, params, batch stats, start step, seconds spent pruning) of a level."""
        plan = self.plan
        if level == 0:
            return full_mask(plan.init_params), plan.init_params, plan.init_batch_stats, 0, 0.0
        rewound = self.replicate.rewind_point()
        if rewound is None:
            raise ConfigError(
                f"{self.replicate.rewind_file} is missing although level 0 finished; "
                f"delete {self.replicate.level_path(0)} to train level 0 again"
            )
        begin = time.perf_counter()
        previous, _ = self.replicate.params(level - 1)
        pruning = plan.cfg.pruning
        mask = magnitude_prune(
            previous,
            self.replicate.mask(level - 1),
            plan.prunable,
            pruning.scope,
            pruning.fraction,
            dict(pruning.layer_fractions),
        )
        prune_seconds = time.perf_counter() - begin
        params, batch_stats = rewound
        return (
            mask,
            host_tree(apply_mask(params, mask)),
            batch_stats,
            plan.rewind_step,
            prune_seconds,
        )

    def run_level(self, level: int) -> dict[str, Any]:
        """Train one level and publish it to the store; returns its summary."""
        plan = self.plan
        wall = time.perf_counter()
        mask, params, batch_stats, start, prune_seconds = self.starting_point(level)
        weights_pct = sparsity_report(mask, plan.prunable)["weights_remaining_pct"]
        for logger in self.loggers:
            logger.begin_level(level, weights_pct)
        writer = self.replicate.begin_level(level)
        try:
            with LevelProgress(
                level, weights_pct, start, plan.total_steps, plan.cfg.progress
            ) as bar:

                def on_eval(record: dict[str, float]) -> None:
                    writer.log(record)
                    bar.update(record)
                    for logger in self.loggers:
                        logger.log_eval(level, record)

                snapshot_step = plan.rewind_step if level == 0 else None
                result = self.trainer.train(
                    params, batch_stats, mask, start, snapshot_step, on_eval
                )
            begin_store = time.perf_counter()
            if level == 0:
                self.replicate.save_rewind_point(*result.snapshot)
            writer.save_weights(mask, result.params, result.batch_stats)
            summary = summarize(plan, level, start, mask, result)
            timing = result.timing.as_dict()
            timing["prune"] = prune_seconds
            timing["store"] = time.perf_counter() - begin_store
            timing["wall"] = time.perf_counter() - wall
            timing["steps_per_second"] = result.steps / timing["train"] if timing["train"] else None
            summary["timing"] = timing
            writer.finish(summary)
        except BaseException:
            writer.abandon()
            raise
        for logger in self.loggers:
            logger.log_level(summary)
        return summary

    def run(self) -> list[dict[str, Any]]:
        """Run every level not yet finished; returns the experiment's curve rows."""
        cfg = self.plan.cfg
        self.store.write_config(OmegaConf.to_yaml(OmegaConf.structured(cfg)), hashed_values(cfg))
        console.print(f"results: {self.store.path}")
        for level in range(cfg.pruning.levels + 1):
            if self.replicate.is_done(level):
                continue
            summary = self.run_level(level)
            console.print(
                f"level {level:>2}: {summary['weights_remaining_pct']:6.2f}% weights left, "
                f"test accuracy {100 * summary['test_accuracy']:.2f}% "
                f"({summary['timing']['wall']:.1f} s)"
            )
            self.store.write_curve()
        rows = self.store.write_curve()
        for logger in self.loggers:
            logger.finish(rows)
        return rows


def run(cfg: Config) -> tuple[ExperimentStore, list[dict[str, Any]]]:
    """Validate ``cfg`` and run (or finish) its IMP experiment; returns the store and curve."""
    plan = prepare(cfg)
    experiment = Experiment(plan, make_loggers(cfg, plan.digest))
    return experiment.store, experiment.run()
