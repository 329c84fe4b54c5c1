"""Checking a run's config against the data and the model, before any writing: the plan.

Everything that can be wrong with the input (a bad value, a key that does not apply, a
dataset that is missing, a rewind step past the end) is found here and raised as one
:class:`ConfigError` line; nothing is written until :func:`prepare` has returned.
"""

from __future__ import annotations

from typing import Any

import jax

from lottery import data, models
from lottery.branches import check_branch_networks, check_branches
from lottery.config import Config, ConfigError, Step, parse_cadence, to_iterations, validate
from lottery.config.applicability import check_applicable, check_compactable
from lottery.config.validate import export_formats
from lottery.experiment.limits import (
    check_backend,
    check_batch_order,
    check_data_parallel,
    check_levels,
    check_replicas,
)
from lottery.experiment.plan import Plan
from lottery.experiment.pretrained import load_pretrained
from lottery.pruning import prunable_paths, strategy_for
from lottery.pruning.strategies import Timeline
from lottery.store import dense_values, digest, hashed_values
from lottery.train import host_tree
from lottery.train.optim import make_optimizer, make_schedule


def check_before_data(cfg: Config) -> Step | float:
    """The checks that need no data: values, dataset and model names, the kernels, the
    pruning method and its keys. Returns the checkpoint cadence (parsed here, once)."""
    validate(cfg)
    data.check_name(cfg.dataset.name)
    models.check_name(cfg.model.name)
    models.check_kernels(cfg.model.kernels)
    check_compactable(cfg, strategy_for(cfg.pruning)[0].compactable)
    return parse_cadence(cfg.train.checkpoint_every, "train.checkpoint_every")


def prepare(cfg: Config) -> Plan:
    """Validate the config against the data and model; raise :class:`ConfigError` if bad."""
    cadence = check_before_data(cfg)
    check_backend()
    dataset = data.load(cfg.dataset)
    check_applicable(cfg, tuple(dataset.input_shape))
    steps_per_epoch, total, eval_every, rewind = training_steps(cfg, dataset)
    timeline = Timeline(steps_per_epoch, total)
    strategy, settings = strategy_for(cfg.pruning, timeline)
    branches = check_branches(cfg, timeline, strategy)
    make_optimizer(cfg.optimizer)
    make_schedule(cfg.optimizer, steps_per_epoch, total)
    network = models.build(cfg.model, dataset.input_shape, dataset.num_classes)
    check_replicas(cfg, network)  # before the weights are made: they could be too many
    params, batch_stats, weights_digest = initial_weights(cfg, network, dataset)
    check_pretrained_start(cfg, rewind, dataset)
    if cfg.deploy.quantize != "none":
        from lottery.experiment.deployment import check_quantizable  # Qwix, ONNX: if asked

        check_quantizable(params, cfg.deploy.quantize)
    prunable = prunable_paths(params, cfg.pruning.prunable)
    strategy.check(params, prunable, settings)
    check_branch_networks(cfg, branches, batch_stats)
    check_levels(cfg, strategy, settings, params, prunable)
    fingerprint = data.fingerprint(dataset)
    hashed = hashed_values(cfg, fingerprint)
    if weights_digest is not None:  # the weights, wherever the file lies
        hashed["init.checkpoint"] = f"weights:{weights_digest}"
    by_steps = isinstance(cadence, Step)
    return Plan(
        cfg,
        dataset,
        network,
        steps_per_epoch,
        total,
        eval_every,
        rewind,
        cadence.to_iterations(steps_per_epoch) if by_steps else None,
        None if by_steps else cadence,
        params,
        batch_stats,
        prunable,
        strategy,
        settings,
        fingerprint,
        hashed,
        digest(hashed),
        digest(dense_values(hashed)),
        branches,
    )


def training_steps(cfg: Config, dataset: Any) -> tuple[int, int, int, int]:
    """Steps per epoch, the training's steps, the evaluation cadence and the rewind step,
    in iterations; one line where the batch, the rewind step or the batch order cannot be."""
    batch = cfg.train.batch_size
    if batch > dataset.num_train:
        raise ConfigError(
            f"train.batch_size={batch} is larger than the {dataset.num_train} training examples "
            f"of {cfg.dataset.name}; choose a smaller batch"
        )
    check_data_parallel(cfg)
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
    if not isinstance(dataset, data.StreamingDataset):
        check_batch_order(cfg, total, dataset.num_train)
    if cfg.train.replicas > 1 and isinstance(dataset, data.StreamingDataset):
        raise ConfigError(
            f"train.replicas={cfg.train.replicas} needs a dataset held on the device, and "
            f"{cfg.dataset.name} is streamed; run the seeds as a sweep instead "
            f"(seed={cfg.seed},{cfg.seed + 1} -m)"
        )
    return steps_per_epoch, total, eval_every, rewind


def initial_weights(cfg: Config, network: models.Network, dataset: Any) -> tuple[Any, Any, Any]:
    """θ_0 and its BatchNorm statistics on the host (the trained model's, with
    ``init.checkpoint``) and the digest of a loaded model's weights (else None)."""
    try:
        params, batch_stats = network.init(jax.random.fold_in(jax.random.key(cfg.seed), 0))
    except Exception as error:  # e.g. a 2-D convolution given 1-D examples
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ConfigError(
            f"model.name={cfg.model.name!r} cannot take the examples of dataset.name="
            f"{cfg.dataset.name!r} (shape {tuple(dataset.input_shape)}): {reason}; choose a "
            "model for this data"
        ) from None
    models.check_built(cfg.model, network, params, batch_stats, dataset.num_classes)
    params, batch_stats = host_tree(params), host_tree(batch_stats)
    if not cfg.init.checkpoint:
        return params, batch_stats, None
    return load_pretrained(cfg.init.checkpoint, params, batch_stats)


def check_pretrained_start(cfg: Config, rewind: int, dataset: Any) -> None:
    """One line for starting points that contradict each other, for a budget with no
    validation data to judge it, and for deployment figures of streamed data."""
    if not cfg.init.train_level_0 and cfg.pruning.start_from == "rewind" and rewind:
        raise ConfigError(
            f"init.train_level_0=false leaves level 0 untrained, so there are no weights at "
            f"pruning.rewind_step={cfg.pruning.rewind_step!r}; rewind to 0it, or set "
            "pruning.start_from=previous"
        )
    exporting = export_formats(cfg.deploy)
    if (cfg.deploy.measure or exporting) and isinstance(dataset, data.StreamingDataset):
        raise ConfigError(
            f"deploy.measure and deploy.export need a dataset held in memory, and "
            f"{cfg.dataset.name} is streamed; measure a level with lottery.deploy in Python"
        )
    validation = getattr(dataset, "validation", None)  # streamed data: judged as it comes
    if cfg.pruning.max_accuracy_drop is not None and validation is not None and not len(validation):
        raise ConfigError(
            f"pruning.max_accuracy_drop={cfg.pruning.max_accuracy_drop} is judged on "
            "validation accuracy and dataset.validation_size=0 holds none out; set "
            "dataset.validation_size=N (test data never chooses)"
        )
