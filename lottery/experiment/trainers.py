"""The trainers of one replicate: the experiment's, and one per other optimizer or network
a branch trains with, each built on first use (a finished experiment compiles nothing)."""

from __future__ import annotations

import functools
from typing import Any

import jax

from lottery.data.augment import crop_flip
from lottery.experiment.plan import Plan
from lottery.pruning.strategies import TrainingInputs
from lottery.train import RunState, Trainer, host_tree
from lottery.train.replicas import ReplicaBatcher


class Trainers:
    """The replicate's trainers, built once each."""

    def __init__(
        self, plan: Plan, batcher: ReplicaBatcher | None = None, device: jax.Device | None = None
    ) -> None:
        self.plan = plan
        # Shared with the other seeds of ``train.replicas``; the device this seed trains on.
        self.batcher, self.device = batcher, device
        self._main: Trainer | None = None
        self._others: dict[str, Trainer] = {}

    @property
    def main(self) -> Trainer:
        """The trainer of the experiment's network and optimizer."""
        if self._main is None:
            self._main = self._make(self.plan.cfg.optimizer)
        return self._main

    @property
    def last_step(self) -> int | None:
        """The step the experiment's trainer last reached (None: it was never built)."""
        return None if self._main is None else self._main.last_step

    def get(self, optimizer: Any | None = None, network: Any = None) -> Trainer:
        """The trainer for ``optimizer`` (default: the experiment's) and ``network``
        (default: the experiment's)."""
        optimizer = optimizer or self.plan.cfg.optimizer
        if optimizer == self.plan.cfg.optimizer and network is None:
            return self.main
        key = repr((optimizer, network))
        if key not in self._others:
            self._others[key] = self._make(optimizer, network)
        return self._others[key]

    def _make(self, optimizer: Any, network: Any = None) -> Trainer:
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


def training_inputs(run: RunState, trainer: Trainer) -> TrainingInputs:
    """What a mask update at ``run.step`` may look at; the dense gradient computed once, and
    only if the update asks for it."""
    gradients = functools.cache(lambda: trainer.dense_gradients(run))
    return TrainingInputs(run.step, host_tree(run.state.params), host_tree(run.mask), gradients)
