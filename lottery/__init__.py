"""lottery: Lottery Ticket Hypothesis and pruning experiments in JAX, Flax and optax.

Importing the package changes nothing in the process (no environment variable, no warnings
filter): the command line sets its own CPU settings, and :func:`use_cpu_settings` gives them
to a script or notebook that wants them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from lottery.ticket import Ticket

from lottery.kernels.xla_cpu import use_cpu_settings

__version__ = "0.1.0"

__all__ = ["load", "run", "use_cpu_settings"]


def load(path: str | Path) -> Ticket:
    """A finished level or branch folder as a :class:`lottery.ticket.Ticket`: network,
    params, mask and BatchNorm statistics, without the dataset.

    Imported lazily so that ``import lottery`` stays light (no JAX until it is needed).
    """
    from lottery.ticket import load as load_ticket

    return load_ticket(path)


def run(overrides: list[str]) -> pd.DataFrame:
    """Run ``python -m lottery OVERRIDES`` in this process; one row per finished level.

    The config is composed by Hydra from the same files and overrides as the command line's,
    so the run writes (or resumes) the same store folder, under the same hash, and the frame
    is :func:`lottery.analysis.load_results` of that folder. A bad override raises
    :class:`lottery.config.ConfigError` with the command line's one-line message; a failed
    run raises :class:`lottery.config.RunError`. Sweeps (``-m``) are the command line's.
    For the command line's CPU speed, call :func:`use_cpu_settings` first.
    """
    from lottery import cli, experiment
    from lottery.analysis import load_results

    config = cli.to_config(_composed(overrides))
    cli.cpu_devices_for_replicas(config.train.replicas)
    store, _ = experiment.run(config)
    return load_results(store.path)


def _composed(overrides: list[str]) -> DictConfig:
    """The config ``python -m lottery OVERRIDES`` composes, or its one-line ConfigError."""
    from hydra import compose, initialize_config_dir

    from lottery import cli
    from lottery.config import ConfigError, register

    if isinstance(overrides, str):
        raise TypeError(f"lottery.run takes a list of overrides, e.g. [{overrides!r}]")
    overrides = [str(o) for o in overrides]
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        raise ConfigError(
            f"lottery.run takes KEY=VALUE overrides, not {flags[0]!r}: run sweeps and Hydra's "
            "flags with python -m lottery"
        )
    message = cli.check_overrides(overrides)
    if message is not None:
        raise ConfigError(message)
    register()
    with initialize_config_dir(str(cli.CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=cli.plain_experiment(overrides))
