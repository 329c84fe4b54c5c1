"""Checks of single config values, before any data is read (one clear line each)."""

from __future__ import annotations

import re

from lottery.config.errors import ConfigError
from lottery.config.schema import Config
from lottery.config.steps import Step, parse_cadence

# A results folder name: one path component, no hidden or parent folders.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
# Known values of train.precision (see lottery.train.steps.PRECISIONS).
PRECISIONS = ("fp32", "bf16")
# Known values of deploy.quantize (see lottery.deploy.quantize.SCHEMES).
QUANTIZE = ("none", "int8", "int8_dynamic")
# Known values of pruning.start_from.
START_FROM = ("rewind", "previous")


def validate(cfg: Config) -> None:
    """Raise :class:`ConfigError` for the first bad value found."""
    pruning, train = cfg.pruning, cfg.train
    if not _NAME_RE.fullmatch(cfg.name) or ".." in cfg.name:
        raise ConfigError(
            f"name={cfg.name!r} must be a single folder name (letters, digits, '.', '_', '+', "
            "'-'; up to 100 characters, not starting with '.' or '-'), e.g. name=resnet20_imp"
        )
    if not 0.0 <= pruning.fraction < 1.0:
        raise ConfigError(
            f"pruning.fraction={pruning.fraction} must be in [0, 1): it is the fraction of the "
            "remaining weights removed per level (0.2 removes 20%)"
        )
    if pruning.levels < 0:
        raise ConfigError(f"pruning.levels={pruning.levels} must be >= 0 (0 trains the dense net)")
    for name, value in (
        ("train.batch_size", train.batch_size),
        ("train.eval_batch_size", train.eval_batch_size),
    ):
        if value < 1:
            raise ConfigError(f"{name}={value} must be a positive number of examples")
    if train.precision not in PRECISIONS:
        raise ConfigError(
            f"train.precision={train.precision!r} is not known; choose one of "
            f"{', '.join(PRECISIONS)}"
        )
    if cfg.dataset.validation_size < 0:
        raise ConfigError(f"dataset.validation_size={cfg.dataset.validation_size} must be >= 0")
    for name, value in (("train.steps", train.steps), ("train.eval_every", train.eval_every)):
        step = Step.parse(value, name)
        if step.epochs == 0 and step.iterations == 0:
            raise ConfigError(f"{name}={value!r} must be longer than 0 iterations")
    parse_cadence(train.checkpoint_every, "train.checkpoint_every")
    if train.keep_checkpoints < 1:
        raise ConfigError(
            f"train.keep_checkpoints={train.keep_checkpoints} must be >= 1 (the newest "
            "checkpoints of an unfinished level that are kept)"
        )
    if pruning.start_from not in START_FROM:
        raise ConfigError(
            f"pruning.start_from={pruning.start_from!r} is not known; choose rewind (the "
            "weights at the rewind step) or previous (the previous level's trained weights)"
        )
    if pruning.max_accuracy_drop is not None and not 0 <= pruning.max_accuracy_drop <= 100:
        raise ConfigError(
            f"pruning.max_accuracy_drop={pruning.max_accuracy_drop} must be in [0, 100] "
            "percentage points of validation accuracy (1.0 allows a drop of one point)"
        )
    if cfg.deploy.quantize not in QUANTIZE:
        raise ConfigError(
            f"deploy.quantize={cfg.deploy.quantize!r} is not known; choose one of "
            f"{', '.join(QUANTIZE)}"
        )
    if not cfg.init.train_level_0 and not cfg.init.checkpoint:
        raise ConfigError(
            "init.train_level_0=false keeps level 0 as loaded, and no init.checkpoint=PATH "
            "says what to load; give a trained model, or leave init.train_level_0 true"
        )
    if train.replicas < 1:
        raise ConfigError(
            f"train.replicas={train.replicas} must be >= 1 (the number of seeds trained at "
            "once; 1 trains one)"
        )
    if train.replicas > 1 and train.data_parallel:
        raise ConfigError(
            f"train.replicas={train.replicas} and train.data_parallel=true both want the "
            "devices; choose one (replicas split over the devices by themselves)"
        )
    if cfg.seed + train.replicas > 2**32:
        raise ConfigError(
            f"seed={cfg.seed} with train.replicas={train.replicas} goes past 2^32 - 1; "
            "choose a smaller seed"
        )
    for name, seed in (("seed", cfg.seed), ("data_seed", cfg.data_seed)):
        if seed is not None and not 0 <= seed < 2**32:
            raise ConfigError(f"{name}={seed} must be in [0, 2^32); choose e.g. {name}=0")
    if any(width < 1 for width in cfg.model.hidden):
        raise ConfigError(
            f"model.hidden={list(cfg.model.hidden)} must list positive layer widths, "
            "e.g. model.hidden=[300,100]"
        )
    if cfg.model.width < 0:
        raise ConfigError(
            f"model.width={cfg.model.width} must be >= 0 (0 = the paper's width), e.g. 16"
        )
    Step.parse(pruning.rewind_step, "pruning.rewind_step")
    Step.parse(cfg.optimizer.warmup, "optimizer.warmup")
    for milestone in cfg.optimizer.milestones:
        Step.parse(milestone, "optimizer.milestones")
