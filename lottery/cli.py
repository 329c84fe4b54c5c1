"""What ``python -m lottery`` does around the experiment: clear errors, the table, the plot."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lottery import interrupts
from lottery.config import Config, ConfigError, Interrupted, RunError, register, validate
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
        hint = "; `pip install hydra-optuna-sweeper` for it" if "sweeper/optuna" in head else ""
        return f"{head}; available: {', '.join(options)}{hint}"
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


def plain_experiment(overrides: list[str]) -> list[str]:
    """``+experiment=NAME`` (and ``++experiment=``) as ``experiment=NAME``.

    ``conf/config.yaml`` lists ``experiment: null`` in its defaults, so that
    ``experiment=NAME`` chooses a preset as in the lightning-hydra-template; Hydra then
    refuses the ``+`` form ("Multiple values for experiment"), which this project has always
    documented: both are accepted, and mean the same.
    """
    return [re.sub(r"^\+\+?experiment=", "experiment=", o) for o in overrides]


def use_optuna_profile() -> None:
    """``hydra/sweeper=optuna`` as this project runs it: the study *maximises* each trial's
    :func:`objective`, trials one after the other (``n_jobs=1``: each informed by those
    before it; ``hydra.sweeper.n_jobs=N`` with ``hydra/launcher=local`` runs N at once),
    the study named after the experiment. Nothing where hydra-optuna-sweeper is not installed.

    The plugin's ConfigStore entry is replaced, not shadowed by a file in ``conf/``: Hydra
    refuses a config file named as a ConfigStore schema that has a defaults list.
    """
    try:
        from hydra_plugins.hydra_optuna_sweeper import config as optuna
    except ImportError:
        return
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # its first call imports the plugins again, storing their own entry
    profile = optuna.OptunaSweeperConf(
        direction=optuna.Direction.maximize, n_jobs=1, study_name="${name}"
    )
    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=profile, provider="lottery"
    )


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config as Hydra will; the one-line error if that fails, else None.

    Hydra reports a bad override (unknown key, wrong type, unknown group option) over
    several lines and a stack-trace hint; we catch it first and say it in one. A sweep
    (``-m``) is checked point by point, every combination of the swept values, so that no
    job starts before every job's config is good (see :func:`check_sweep`). Runs with other
    Hydra flags (``--cfg``, ``--help``, ...) are left to Hydra as they are.
    """
    use_optuna_profile()
    overrides = plain_experiment([arg for arg in argv if arg not in MULTIRUN_FLAGS])
    if any(arg.startswith("-") for arg in overrides):
        return None
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        try:
            sweep = len(overrides) < len(argv)
            axes = _sweep_axes(overrides) if sweep else [[o] for o in overrides]
        except Exception as error:  # an override Hydra cannot parse
            return describe_compose_error(error)
        return check_sweep(axes)


# A sweep is checked point by point up to this many points (milliseconds a point: tens of
# seconds for the largest; docs/benchmarks.md, "Design measurements"). Past it, or past
# MAX_COMPOSED_POINTS distinct config-group choices (a composition costs a tenth of a second
# or more), each swept value is checked with the first value of every other sweep instead: a
# value bad on its own is still found before any job starts, a combination bad only together
# is found when its job runs.
MAX_CHECKED_POINTS = 5000
MAX_COMPOSED_POINTS = 100


def check_sweep(axes: list[list[str]]) -> str | None:
    """The one-line error of the first bad point of a sweep (in Hydra's launch order), or None.

    ``axes`` holds, per command-line override, its values as single overrides (one for a
    plain override, several for ``k=a,b``): the sweep's points are their cartesian product.
    """
    import itertools

    configs = SweepConfigs(axes)
    if math.prod(len(values) for values in axes) > MAX_CHECKED_POINTS or \
            configs.compositions > MAX_COMPOSED_POINTS:
        points = _value_by_value(axes)
    else:
        points = [list(point) for point in itertools.product(*axes)]
    check = check_before_data if len(points) > 1 else validate
    for number, point in enumerate(points):
        named = [point[index] for index in configs.swept] if number else []
        try:
            config = configs.of(point)
        except Exception as error:  # any composition failure is the user's input
            return _naming_point(describe_compose_error(error), named)
        try:
            check(to_config(config))
        except ConfigError as error:
            return _naming_point(str(error), named)
    return None


class SweepConfigs:
    """The composed config of each point of a sweep, as its job will compose it.

    Composing takes about 0.15 s, so points that differ only in plain values (``k=v``, not a
    config group such as ``model=...`` nor ``hydra.*``) share one composition, and each
    point's values are then applied to it as Hydra applies command-line values after
    composing (``ConfigLoaderImpl._apply_overrides_to_config``).
    """

    def __init__(self, axes: list[list[str]]) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        self.swept = [index for index, values in enumerate(axes) if len(values) > 1]
        self.structural = [index for index in self.swept if _is_structural(axes[index])]
        self.values = [index for index in self.swept if index not in self.structural]
        self.parsed = {v: parser.parse_override(v) for i in self.values for v in axes[i]}
        # Values that add, delete or merge into a node change what the next point starts
        # from: those points start from a copy. Plain values replace each other.
        self.copy = any(
            o.is_add() or o.is_force_add() or o.is_delete() or isinstance(o.value(), dict)
            for o in self.parsed.values()
        )
        self.compositions = math.prod(len(axes[index]) for index in self.structural)
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def of(self, point: list[str]) -> DictConfig:
        import copy

        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        key = tuple(point[index] for index in self.structural)
        if key not in self.composed:
            fixed = [o for index, o in enumerate(point) if index not in self.values]
            self.composed[key] = compose("config", overrides=fixed)
        config = copy.deepcopy(self.composed[key]) if self.copy else self.composed[key]
        overrides = [self.parsed[point[index]] for index in self.values]
        ConfigLoaderImpl._apply_overrides_to_config(overrides, config)
        return config


def check_before_data(config: Config) -> None:
    """The checks of a run's config that need no data (those
    :func:`lottery.experiment.checks.prepare` makes before it loads the data), and keys
    that do not apply. A sweep makes them for every point before its first job starts; they
    import JAX (about a second), so a single run leaves them to the run.

    The examples' shape is not known before the data is loaded: an image's is given, so that
    only ``dataset.augment`` on data that is not images is left to the job to find.
    """
    from lottery.config.applicability import check_applicable
    from lottery.experiment.checks import check_before_data as check_values

    check_values(config)
    check_applicable(config, (32, 32, 3))


def _is_structural(values: list[str]) -> bool:
    """Whether a sweep changes what is composed (a config group, or Hydra's own config), not
    only a value that Hydra sets after composing."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    repository = GlobalHydra.instance().config_loader().repository
    return any(
        override.is_hydra_override() or repository.group_exists(override.key_or_group)
        for override in OverridesParser.create().parse_overrides(values)
    )


def _naming_point(message: str, named: list[str]) -> str:
    """``message`` with the sweep point it is about (``named``: its swept values; empty for
    the sweep's first point, whose error is the command's own), unless it names them all."""
    if all(override in message for override in named):
        return message
    return f"{message} (sweep point: {' '.join(named)})"


def _sweep_axes(overrides: list[str]) -> list[list[str]]:
    """Per override, its values as single overrides (``k=a,b`` gives ``k=a`` and ``k=b``;
    a sweeper's ``k=interval(a,b)``, ``k=a`` and ``k=b``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    axes: list[list[str]] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if isinstance(override.value(), IntervalSweep):  # a search space: its two ends
            interval = override.value()
            ends = (interval.start, interval.end)
            if "int" in interval.tags:  # Optuna's integer interval: tag(int,interval(a,b))
                ends = tuple(int(end) for end in ends)
            axes.append([f"{key}={end}" for end in ends])
        elif override.is_sweep_override():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return axes


def _value_by_value(axes: list[list[str]]) -> list[list[str]]:
    """Points that together try every value of every sweep once: each swept value with the
    first value of the other sweeps."""
    firsts = [values[0] for values in axes]
    points = [firsts]
    for index, values in enumerate(axes):
        for value in values[1:]:
            points.append([*firsts[:index], value, *firsts[index + 1 :]])
    return points


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
    return run_job(cfg).code


class JobFailed(Exception):
    """A sweep job's run failed with exit ``code`` (its one line is in the job's log)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the run failed with exit status {code}")
        self.code = code


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What a run gives back: its exit code, and the number a hyperparameter sweeper
    optimises (:func:`objective`; None where it cannot be had)."""

    code: int
    objective: float | None = None


def say_preempted(preempted: interrupts.Preempted) -> None:
    """The one line of a run stopped by its scheduler (or a ``kill``): where, and what was
    saved. Printed to stderr, where Slurm's job log and a terminal both show it."""
    where = f" at {preempted.where}" if preempted.where else ""
    saved = (
        f"saved a checkpoint of step {preempted.step:,}"
        if preempted.step is not None
        else "every finished level is saved"
    )
    after = (
        "the job resumes from it if Slurm requeues it, as does the same sweep run again"
        if "SLURM_JOB_ID" in os.environ
        else "run the same command to resume"
    )
    print(f"stopped by {preempted}{where}: {saved}; {after}", file=sys.stderr, flush=True)


def run_job(cfg: DictConfig) -> JobResult:
    """Run the experiment; record Hydra's config of this invocation beside its results
    (:func:`write_hydra_record`), print the table and draw the plot."""
    # Imported here, not at the top: JAX, orbax and matplotlib take seconds to import, and a
    # bad override, `--help` or `--cfg` should answer without them.
    from lottery import distributed, experiment
    from lottery.analysis import plot_sparsity_accuracy

    quiet_libraries()
    config = to_config(cfg)
    cpu_devices_for_replicas(config.train.replicas)
    try:
        with interrupts.caught():
            distributed.start()  # one process of several: before JAX computes anything
            store, rows = experiment.run(config)
    except ConfigError as error:
        error_line(str(error))
        return JobResult(2)
    except RunError as error:
        error_line(str(error))
        return JobResult(130 if isinstance(error, Interrupted) else 1)
    except interrupts.Preempted as preempted:
        say_preempted(preempted)
        interrupts.hand_back(preempted)  # submitit requeues the job; exits 128 + the signal
    record = write_hydra_record(cfg, store.path)
    title = config.name  # the hash and the settings are in the figure's footnote
    plot = store.path / "sparsity_accuracy.png"
    try:
        plot_sparsity_accuracy(rows, plot, title)
    except OSError as error:  # every level is finished: only the figure is missing
        if error.errno != errno.ENOSPC:
            raise
        error_line(
            f"the disk is full (writing {plot}); every level is finished and its results are "
            "intact: free some space and run the same command (or python -m lottery.report) "
            "to draw the plot"
        )
        return JobResult(1)
    console.print(summary_table(rows, title))
    console.print(f"curve: {store.curve_file}\nplot:  {plot}")
    if record is not None:
        console.print(f"hydra: {record}")
    value = objective(store.summaries())
    if value is None and optuna_sweep():
        error_line(
            f"hydra/sweeper=optuna maximises the validation accuracy, and {config.dataset.name} "
            "holds no validation data out: set dataset.validation_size=N"
        )
        return JobResult(2)
    return JobResult(0, value)


HYDRA_RECORDS = ".hydra"  # in an experiment's folder: one folder per invocation


def write_hydra_record(cfg: DictConfig, experiment: Path) -> Path | None:
    """Hydra's own record of this invocation (``config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``, as Hydra writes them into ``.hydra/``) in
    ``<experiment>/.hydra/<time>_<pid>[_job<N>]/``; None outside Hydra.

    Hydra's own output folder is off (``hydra.output_subdir: null``): a run's results are
    named by its config's hash, known only once the data is loaded. These files are not read
    back: the experiment's hash and its resume are the same with or without them. Each
    invocation writes a folder of its own (a new name if it exists), file by file atomically,
    so that two runs at once never write one file.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lottery.atomic import atomic_write_text, this_process_writes

    if not HydraConfig.initialized() or not this_process_writes():  # one of several: process 0
        return None
    hydra = HydraConfig.get()
    name = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}"
    if hydra.mode == RunMode.MULTIRUN:
        name += f"_job{hydra.job.num}"
    folder = _new_folder(experiment / HYDRA_RECORDS, name)
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})))
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra.overrides.task))
    return folder


def _new_folder(parent: Path, name: str) -> Path:
    """``parent/name``, made now (``name-2``, ``name-3``, ... if it exists)."""
    parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        folder = parent / (name if number == 1 else f"{name}-{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def objective(summaries: list[dict[str, Any]]) -> float | None:
    """The number a hyperparameter sweep (``hydra/sweeper=optuna``) maximises: the final
    validation accuracy of the sparsest level the run finished (the pruned network, not its
    branches), the mean over replicates. Validation, never test accuracy, since it chooses.
    None where a finished level has no validation accuracy (no validation split held out).
    """
    from lottery.store import MAIN_BRANCH

    main = [s for s in summaries if s.get("branch", MAIN_BRANCH) == MAIN_BRANCH]
    if not main:
        return None
    last = max(s["level"] for s in main)
    values = [s.get("val_accuracy") for s in main if s["level"] == last]
    if any(value is None for value in values):
        return None
    return float(sum(values) / len(values))


def optuna_sweep() -> bool:
    """Whether this job is a trial of the Optuna sweeper."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and "optuna" in str(
        HydraConfig.get().sweeper.get("_target_", "")
    ).lower()


SLURM_LAUNCHERS = (
    "hydra/launcher=slurm",
    "hydra/launcher=slurm_cpu",
    "hydra/launcher=submitit_slurm",
)


def slurm_launcher(argv: list[str]) -> bool:
    """Whether the command's sweep runs on Slurm (``hydra/launcher=slurm``)."""
    return any(arg in SLURM_LAUNCHERS for arg in argv)


def check_launcher(argv: list[str]) -> str | None:
    """The one-line error for a Slurm sweep started where Slurm is not (submitit would fail
    with a traceback on its first job); None otherwise."""
    import shutil

    if slurm_launcher(argv) and shutil.which("srun") is None:
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
