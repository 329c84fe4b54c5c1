"""Checks of single config values, before any data is read (one clear line each)."""

from __future__ import annotations

import math
import re

from lottery.config.errors import ConfigError
from lottery.config.schema import Config, DeployConfig, OptimizerConfig
from lottery.config.steps import Step

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
    check_name_and_pruning(cfg)
    check_training(cfg)
    check_deploy(cfg.deploy)
    check_optimizer(cfg.optimizer)
    check_start_and_seeds(cfg)
    check_model_and_steps(cfg)


def check_name_and_pruning(cfg: Config) -> None:
    """The results' folder name and the pruning settings."""
    pruning = cfg.pruning
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


def check_training(cfg: Config) -> None:
    """Batch sizes, precision, validation split, steps, checkpoints and replicas."""
    train = cfg.train
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
    if train.keep_checkpoints < 1:
        raise ConfigError(
            f"train.keep_checkpoints={train.keep_checkpoints} must be >= 1 (the newest "
            "checkpoints of an unfinished level that are kept)"
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


def check_start_and_seeds(cfg: Config) -> None:
    """What level 0 starts from, and the seeds."""
    if not cfg.init.train_level_0 and not cfg.init.checkpoint:
        raise ConfigError(
            "init.train_level_0=false keeps level 0 as loaded, and no init.checkpoint=PATH "
            "says what to load; give a trained model, or leave init.train_level_0 true"
        )
    if cfg.seed + cfg.train.replicas > 2**32:
        raise ConfigError(
            f"seed={cfg.seed} with train.replicas={cfg.train.replicas} goes past 2^32 - 1; "
            "choose a smaller seed"
        )
    for name, seed in (("seed", cfg.seed), ("data_seed", cfg.data_seed)):
        if seed is not None and not 0 <= seed < 2**32:
            raise ConfigError(f"{name}={seed} must be in [0, 2^32); choose e.g. {name}=0")


def check_model_and_steps(cfg: Config) -> None:
    """The model's widths and the step strings of the rewind point and the schedule."""
    if any(width < 1 for width in cfg.model.hidden):
        raise ConfigError(
            f"model.hidden={list(cfg.model.hidden)} must list positive layer widths, "
            "e.g. model.hidden=[300,100]"
        )
    if cfg.model.width < 0:
        raise ConfigError(
            f"model.width={cfg.model.width} must be >= 0 (0 = the paper's width), e.g. 16"
        )
    Step.parse(cfg.pruning.rewind_step, "pruning.rewind_step")
    Step.parse(cfg.optimizer.warmup, "optimizer.warmup")
    for milestone in cfg.optimizer.milestones:
        Step.parse(milestone, "optimizer.milestones")


# deploy.export's values: the formats each writes (true and false: a bool of old configs).
EXPORT_FORMATS = {
    "none": (), "false": (), "jax_export": ("jax_export",), "true": ("jax_export",),
    "onnx": ("onnx",), "all": ("jax_export", "onnx"),
}


def export_formats(deploy: DeployConfig) -> tuple[str, ...]:
    """The formats ``deploy.export`` asks for (jax_export, onnx), in that order."""
    return EXPORT_FORMATS.get(str(deploy.export).lower(), ())


def check_deploy(deploy: DeployConfig) -> None:
    """A known quantization and export, and a quantization something reads (the figures or
    the artifact)."""
    if str(deploy.export).lower() not in EXPORT_FORMATS:
        raise ConfigError(
            f"deploy.export={deploy.export!r} is not known; choose none, jax_export, onnx or "
            "all (both)"
        )
    if deploy.quantize not in QUANTIZE:
        raise ConfigError(
            f"deploy.quantize={deploy.quantize!r} is not known; choose one of "
            f"{', '.join(QUANTIZE)}"
        )
    if deploy.quantize != "none" and not (deploy.measure or export_formats(deploy)):
        raise ConfigError(
            f"deploy.quantize={deploy.quantize} is used only by deploy.measure (the quantized "
            "network's size, accuracy and latency) and deploy.export; add deploy.measure=true"
        )


# optimizer keys: (name, lowest, highest, whether the lowest itself is allowed, the meaning);
# the highest is never allowed. Values outside make no optimizer anyone means to run (a
# momentum of 1 never forgets a gradient, a negative decay grows every weight).
_OPTIMIZER_RANGES = (
    ("lr", 0.0, math.inf, False, "the learning rate, e.g. 0.1 for SGD or 1e-3 for Adam"),
    ("momentum", 0.0, 1.0, True, "SGD's momentum, e.g. 0.9 (0: none)"),
    ("weight_decay", 0.0, math.inf, True, "the L2 penalty, e.g. 1e-4 (0: none)"),
    ("b1", 0.0, 1.0, True, "Adam's first-moment decay, e.g. 0.9"),
    ("b2", 0.0, 1.0, True, "Adam's second-moment decay, e.g. 0.999"),
    ("eps", 0.0, math.inf, True, "Adam's denominator term, e.g. 1e-8"),
    ("gamma", 0.0, math.inf, False, "the step schedule's factor at each milestone, e.g. 0.1"),
)


def check_optimizer(optimizer: OptimizerConfig) -> None:
    """Every numeric optimizer key in its meaningful range. A NaN or infinite learning rate
    is left to the run, which stops at its first non-finite loss with one line."""
    for key, low, high, low_allowed, meaning in _OPTIMIZER_RANGES:
        value = getattr(optimizer, key)
        if key == "lr" and not math.isfinite(value):
            continue
        inside = (low <= value if low_allowed else low < value) and value < high
        if not inside:
            bounds = f"{'[' if low_allowed else '('}{low:g}, {high:g})"
            raise ConfigError(
                f"optimizer.{key}={value} must be in {bounds}: it is {meaning}"
            )
