"""What ``python -m lottery`` does around the experiment: clear errors, the table, the plot."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lottery import interrupts
from lottery.config import Config, ConfigError, RunError, register, validate
from lottery.logging import console, error_line, summary_table

CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def describe_compose_error(error: BaseException) -> str:
    """One line from Hydra/OmegaConf's multi-line composition errors."""
    text = str(error)
    if "Could not find" in text and "Available options" in text:
        head = _first_line(error).removeprefix("In 'config': ")
        listing = text.split("Available options", 1)[1].split("Config search path")[0]
        options = [line.strip() for line in listing.splitlines()[1:] if line.strip()]
        return f"{head}; available: {', '.join(options)}"
    line = _first_line(error)
    cause = error.__cause__ or error.__context__
    if cause is not None and _first_line(cause) not in line:
        line = f"{line.rstrip('.')}: {_first_line(cause)}"
    return f"{line} (see every key and its value with `python -m lottery --cfg job`)"


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_flag_first(argv: list[str]) -> list[str]:
    """``-m`` moved before the overrides, so ``python -m lottery seed=1,2 -m
    hydra/launcher=slurm`` works (Hydra's argument parser takes no flag between overrides)."""
    flags = [arg for arg in argv if arg in MULTIRUN_FLAGS]
    return flags[:1] + [arg for arg in argv if arg not in MULTIRUN_FLAGS]


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config as Hydra will; the one-line error if that fails, else None.

    Hydra reports a bad override (unknown key, wrong type, unknown group option) over
    several lines and a stack-trace hint; we catch it first and say it in one. A sweep
    (``-m``) is checked value by value: each swept value composed with the first value of
    the other sweeps. Runs with other Hydra flags (``--cfg``, ``--help``, ...) are left to
    Hydra as they are.
    """
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    if any(arg.startswith("-") for arg in overrides):
        return None
    from hydra import compose, initialize_config_dir

    register()
    try:
        candidates = _sweep_candidates(overrides) if len(overrides) < len(argv) else [overrides]
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            configs = [compose("config", overrides=candidate) for candidate in candidates]
    except Exception as error:  # any composition failure is the user's input
        return describe_compose_error(error)
    try:  # values too, so that no job of a sweep starts before every job's values are good
        for config in configs:
            validate(to_config(config))
    except ConfigError as error:
        return str(error)
    return None


def _sweep_candidates(overrides: list[str]) -> list[list[str]]:
    """Override lists that together try every value of every sweep (``k=a,b``) once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices: list[list[str]] = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    firsts = [values[0] for values in choices]
    candidates = [firsts]
    for index, values in enumerate(choices):
        for value in values[1:]:
            candidates.append([*firsts[:index], value, *firsts[index + 1 :]])
    return candidates


def to_config(cfg: DictConfig) -> Config:
    """The typed config object of a composed DictConfig."""
    return OmegaConf.to_object(cfg)


def quiet_libraries() -> None:
    """Hydra's job logging shows INFO records; JAX's probe of absent backends ("Unable to
    initialize backend 'tpu'") is one of them and means nothing to a user on a CPU or GPU."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def cpu_devices_for_replicas(replicas: int) -> None:
    """With ``train.replicas=N``: one CPU device per core (up to N), so that the seeds train
    on every core at once, unless ``XLA_FLAGS`` already sets the count. Only the CPU backend
    is affected (a GPU run keeps its GPUs); too late once JAX has started, then left alone."""
    import os

    if replicas < 2 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import contextlib

    import jax

    with contextlib.suppress(RuntimeError):  # the backend is already up (a caller in Python)
        jax.config.update("jax_num_cpu_devices", min(replicas, os.cpu_count() or 1))


def run(cfg: DictConfig) -> int:
    """Run the experiment; print the table and draw the plot. Returns the exit code."""
    # Imported here, not at the top: JAX, orbax and matplotlib take seconds to import, and a
    # bad override, `--help` or `--cfg` should answer without them.
    from lottery import experiment
    from lottery.analysis import plot_sparsity_accuracy

    quiet_libraries()
    config = to_config(cfg)
    cpu_devices_for_replicas(config.train.replicas)
    try:
        with interrupts.caught():
            store, rows = experiment.run(config)
    except ConfigError as error:
        error_line(str(error))
        return 2
    except RunError as error:
        error_line(str(error))
        return 130 if str(error).startswith("interrupted") else 1
    title = f"{config.name} [{store.path.name}]"
    plot = plot_sparsity_accuracy(rows, store.path / "sparsity_accuracy.png", title)
    console.print(summary_table(rows, title))
    console.print(f"curve: {store.curve_file}\nplot:  {plot}")
    return 0


SLURM_LAUNCHERS = ("hydra/launcher=slurm", "hydra/launcher=submitit_slurm")


def check_launcher(argv: list[str]) -> str | None:
    """The one-line error for a Slurm sweep started where Slurm is not (submitit would fail
    with a traceback on its first job); None otherwise."""
    import shutil

    if any(arg in SLURM_LAUNCHERS for arg in argv) and shutil.which("srun") is None:
        return (
            "hydra/launcher=slurm needs Slurm (no `srun` on this machine); start the sweep on "
            "the cluster's login node, or use hydra/launcher=local on this machine"
        )
    return None


def exit_on_bad_overrides(argv: list[str]) -> None:
    """Exit with status 2 and one line if the command-line overrides do not compose."""
    message = check_launcher(argv) or check_overrides(argv)
    if message is not None:
        error_line(message)
        sys.exit(2)
