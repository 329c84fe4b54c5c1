"""Retraining variants of a level: learning-rate rewinding, fine-tuning, other rewind points.

``lr_rewind`` and ``finetune`` keep the trained weights of level L-1 (the ones level L's mask
was chosen from), pruned by level L's mask, as Renda et al. (2020) compare them with weight
rewinding: each is a one-level branch off the IMP line, not an iterated line of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from lottery.branches.base import BranchInputs, BranchRun
from lottery.config import ConfigError
from lottery.config.schema import FinetuneBranch, LrRewindBranch, RewindToBranch
from lottery.pruning import Mask, apply_mask


def _pruned_parent(inputs: BranchInputs) -> tuple[Any, Any, Mask]:
    params, batch_stats = inputs.parent()
    return jax.device_get(apply_mask(params, inputs.mask)), batch_stats, inputs.mask


def _iterations(value: str, key: str, timeline: Any) -> int:
    steps = timeline.iterations(value, key)
    if not 0 <= steps < timeline.total_steps:
        raise ConfigError(
            f"{key}={value!r} ({steps} iterations) must be before the end of training "
            f"(train.steps = {timeline.total_steps} iterations)"
        )
    return steps


def lr_rewind(inputs: BranchInputs, args: LrRewindBranch) -> list[BranchRun]:
    """Trained weights, pruned; the learning-rate schedule replayed from step k to the end."""
    plan = inputs.plan
    step = (
        plan.rewind_step
        if args.step is None
        else _iterations(args.step, "branch.lr_rewind.step", plan.timeline)
    )
    return [BranchRun("lr_rewind", {"step": step}, step, lambda: _pruned_parent(inputs))]


def finetune(inputs: BranchInputs, args: FinetuneBranch) -> list[BranchRun]:
    """Trained weights, pruned, trained on at the schedule's final learning rate (constant)."""
    plan = inputs.plan
    total = plan.total_steps
    if args.steps is None:
        steps = total - plan.rewind_step
    else:
        steps = plan.timeline.iterations(args.steps, "branch.finetune.steps")
    optimizer = dataclasses.replace(
        plan.cfg.optimizer, lr=inputs.final_lr, schedule="constant", milestones=[], warmup="0it"
    )
    run_args = {"steps": steps, "lr": inputs.final_lr}
    return [
        BranchRun("finetune", run_args, total - steps, lambda: _pruned_parent(inputs), optimizer)
    ]


def check_finetune(args: FinetuneBranch, timeline: Any) -> None:
    if args.steps is not None:
        steps = timeline.iterations(args.steps, "branch.finetune.steps")
        if not 0 < steps <= timeline.total_steps:
            raise ConfigError(
                f"branch.finetune.steps={args.steps!r} ({steps} iterations) must be between 1 "
                f"and train.steps ({timeline.total_steps} iterations)"
            )


def check_lr_rewind(args: LrRewindBranch, timeline: Any) -> None:
    if args.step is not None:
        _iterations(args.step, "branch.lr_rewind.step", timeline)


def rewind_to(inputs: BranchInputs, args: RewindToBranch) -> list[BranchRun]:
    """The level's mask on the weights of each rewind point k in ``args.steps``."""
    plan = inputs.plan
    runs = []
    for value in args.steps:
        step = _iterations(value, "branch.rewind_to.steps", plan.timeline)

        def start(step: int = step) -> tuple[Any, Any, Mask]:
            params, batch_stats = inputs.rewind_point(step)
            return jax.device_get(apply_mask(params, inputs.mask)), batch_stats, inputs.mask

        runs.append(BranchRun(f"rewind_to_{step}it", {"step": step}, step, start))
    return runs


def check_rewind_to(args: RewindToBranch, timeline: Any) -> None:
    if not args.steps:
        raise ConfigError("branch.rewind_to.steps is empty; give rewind steps, e.g. [0it,500it]")
    seen: dict[int, str] = {}  # a step listed twice would train the same branch twice
    for value in args.steps:
        step = _iterations(value, "branch.rewind_to.steps", timeline)
        if step in seen:
            same = f"{seen[step]!r} and {value!r} are" if seen[step] != value else f"{value!r} is"
            raise ConfigError(
                f"branch.rewind_to.steps={list(args.steps)}: {same} the same rewind point "
                f"({step} iterations) listed twice; list each step once"
            )
        seen[step] = value
