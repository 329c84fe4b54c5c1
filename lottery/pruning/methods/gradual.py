"""``pruning.method=gradual``: pruning inside one training (level 1), by tfmot's polynomial
schedule (Zhu & Gupta 2017): the training updates the mask (see :func:`training_updates`)."""

from __future__ import annotations

from collections.abc import Callable

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import (
    PruneInputs,
    Strategy,
    Timeline,
    TrainingInputs,
    check_one_training,
    update_frequency,
)
from lottery.pruning.gradual import PolynomialDecay, gradual_mask
from lottery.pruning.mask import Mask

KEYS = frozenset(
    {"initial_sparsity", "final_sparsity", "begin_step", "end_step", "frequency", "power"}
)


def settings(cfg: PruningConfig, timeline: Timeline | None) -> PolynomialDecay | None:
    for key in ("initial_sparsity", "final_sparsity"):
        value = getattr(cfg, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"pruning.{key}={value} must be in [0, 1)")
    if cfg.final_sparsity < cfg.initial_sparsity:
        raise ConfigError(
            f"pruning.final_sparsity={cfg.final_sparsity} is below pruning.initial_sparsity="
            f"{cfg.initial_sparsity}; gradual pruning only adds to the mask"
        )
    if cfg.power < 1:
        raise ConfigError(f"pruning.power={cfg.power} must be at least 1 (tfmot's default is 3)")
    check_one_training(cfg, "prunes")
    if timeline is None:
        return None
    begin = timeline.iterations(cfg.begin_step, "pruning.begin_step")
    end = timeline.iterations(cfg.end_step, "pruning.end_step")
    frequency = update_frequency(cfg, timeline)
    if not begin < end < timeline.total_steps:
        raise ConfigError(
            f"pruning.begin_step={cfg.begin_step!r} ({begin} it) and pruning.end_step="
            f"{cfg.end_step!r} ({end} it) must satisfy begin < end < train.steps "
            f"({timeline.total_steps} it)"
        )
    schedule = PolynomialDecay(
        cfg.initial_sparsity, cfg.final_sparsity, begin, end, frequency, cfg.power
    )
    rewind = timeline.iterations(cfg.rewind_step, "pruning.rewind_step")
    first_update = schedule.pruning_steps()[0] - 1  # tfmot's step t: after t - 1 steps
    if rewind > first_update:
        raise ConfigError(
            f"pruning.rewind_step={cfg.rewind_step!r} ({rewind} it) is after the schedule's "
            f"first mask update (pruning.begin_step={cfg.begin_step!r}, made after "
            f"{first_update} it: tfmot prunes at step t after t - 1 gradient steps); level 1 "
            f"trains from the rewind step and would skip it; rewind to at most {first_update}it"
        )
    return schedule


def prune(inputs: PruneInputs, s: PolynomialDecay) -> Mask:
    return inputs.mask  # the training prunes (see :func:`training_updates`)


def training_updates(
    schedule: PolynomialDecay, prunable: list[str], start: int, end: int
) -> tuple[list[int], Callable[[TrainingInputs], Mask]]:
    def update(inputs: TrainingInputs) -> Mask:
        return gradual_mask(
            inputs.params, inputs.mask, prunable, schedule.sparsity_after(inputs.step)
        )

    return schedule.update_steps(start, end), update


STRATEGY = Strategy(
    "gradual", KEYS, settings, prune, during_training=True, training_updates=training_updates,
    revision=lambda cfg: "gradual-2",  # step for step as tfmot (issue 29)
)
