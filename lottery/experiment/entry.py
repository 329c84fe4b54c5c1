"""``run(cfg)``: the experiment of a config, from its checks to its curve: one seed's
:class:`~lottery.experiment.driver.Experiment`, or several seeds at once (``train.replicas``)."""

from __future__ import annotations

from typing import Any

from lottery.config import Config
from lottery.experiment.checks import prepare
from lottery.experiment.driver import Experiment
from lottery.experiment.replicas import run_replicas
from lottery.logging import console, make_loggers
from lottery.store import ExperimentStore


def run(cfg: Config) -> tuple[ExperimentStore, list[dict[str, Any]]]:
    """Validate ``cfg`` and run (or finish) its experiment; returns the store and curve."""
    plan = prepare(cfg)
    if plan.early_stopping_off:
        console.print(
            f"note: early stopping is off ({plan.early_stopping_off} holds no validation data "
            "out): early_stop_* stay empty; set dataset.validation_size=N to judge it"
        )
    if cfg.train.replicas > 1:
        return run_replicas(plan)
    experiment = Experiment(plan, make_loggers(cfg, plan.digest))
    return experiment.store, experiment.run()
