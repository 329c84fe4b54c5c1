"""The plan of a run: everything it needs (the data, the network, the steps, the strategy,
the hash), made by :func:`lottery.experiment.checks.prepare` once the config is checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax

from lottery import data, models
from lottery.branches import Branch
from lottery.config import Config
from lottery.pruning import Strategy
from lottery.pruning.strategies import Timeline
from lottery.train import host_tree


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
    # Checkpoint cadence: a number of steps, or seconds between checkpoints at evaluations.
    checkpoint_steps: int | None
    checkpoint_seconds: float | None
    init_params: Any
    init_batch_stats: Any
    prunable: list[str]
    strategy: Strategy
    strategy_settings: Any
    fingerprint: str
    hashed: dict[str, Any]
    digest: str
    dense_digest: str
    branches: list[Branch]

    @property
    def timeline(self) -> Timeline:
        """What step strings mean in this run."""
        return Timeline(self.steps_per_epoch, self.total_steps)

    @property
    def data_seed(self) -> int:
        return self.cfg.seed if self.cfg.data_seed is None else self.cfg.data_seed

    @property
    def prefix(self) -> str:
        """What starts the run's console lines: its seed when several seeds train at once."""
        return f"seed {self.cfg.seed} " if self.cfg.train.replicas > 1 else ""

    @property
    def early_stopping_off(self) -> str | None:
        """Why no level has an early-stopping iteration (no validation data held out), or
        None where early stopping is judged."""
        validation = getattr(self.dataset, "validation", None)  # streamed: judged as it comes
        if validation is not None and not len(validation):
            return f"dataset.validation_size={self.cfg.dataset.validation_size}"
        return None

    def data_stream(self, level: int) -> int:
        """Which level's batch order and augmentation ``level`` trains with."""
        return 0 if self.cfg.train.replay_data_order else level


def with_seed(plan: Plan, seed: int) -> Plan:
    """The same plan for another replicate: its seed and its initial weights (the data, the
    model and the hash are the seed's too, since the seed is not hashed). A run from a
    trained model (``init.checkpoint``) starts every seed from it."""
    cfg = dataclasses.replace(plan.cfg, seed=seed)
    if cfg.init.checkpoint:
        return dataclasses.replace(plan, cfg=cfg)
    params, batch_stats = plan.network.init(jax.random.fold_in(jax.random.key(seed), 0))
    return dataclasses.replace(
        plan, cfg=cfg, init_params=host_tree(params), init_batch_stats=host_tree(batch_stats)
    )
