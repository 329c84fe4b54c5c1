"""Branches: extra trainings from a finished level's mask, by name (``branches=[...]``).

- ``random_reinit``: the same mask, a new initialisation;
- ``random_prune``: a random mask with the same per-layer (or global) count;
- ``lr_rewind``: the trained weights, the learning-rate schedule replayed from step k;
- ``finetune``: the trained weights, trained at the final learning rate;
- ``rewind_to``: the mask on several rewind points k;
- ``instability``: a second copy on another data order, and the error barrier between them;
- ``small_dense``: a narrower dense network with the ticket's parameter count (Zhu & Gupta).

Each branch's arguments are ``branch.<name>.*`` (typed in :mod:`lottery.config.schema`).
"""

from __future__ import annotations

from typing import Any

from lottery.branches.base import Branch, BranchInputs, BranchRun
from lottery.branches.controls import (
    check_random_prune,
    check_random_reinit,
    random_prune,
    random_reinit,
)
from lottery.branches.instability import (
    check_instability,
    check_instability_network,
    instability,
)
from lottery.branches.retrain import (
    check_finetune,
    check_lr_rewind,
    check_rewind_to,
    finetune,
    lr_rewind,
    rewind_to,
)
from lottery.branches.small_dense import check_small_dense, small_dense
from lottery.config import Config, ConfigError

BRANCHES: dict[str, Branch] = {
    "random_reinit": Branch("random_reinit", random_reinit, check_random_reinit),
    "random_prune": Branch("random_prune", random_prune, check_random_prune),
    "lr_rewind": Branch("lr_rewind", lr_rewind, check_lr_rewind),
    "finetune": Branch("finetune", finetune, check_finetune),
    "rewind_to": Branch("rewind_to", rewind_to, check_rewind_to),
    "instability": Branch(
        "instability", instability, check_instability, check_instability_network
    ),
    "small_dense": Branch("small_dense", small_dense, check_small_dense),
}


def branch_args(cfg: Config, name: str) -> Any:
    """The typed arguments ``branch.<name>`` of a branch."""
    return getattr(cfg.branch, name)


def check_branches(cfg: Config, timeline: Any, strategy: Any) -> list[Branch]:
    """The branches ``cfg.branches`` names, their arguments checked; one ConfigError line
    for an unknown or repeated name, a bad argument, or a branch the strategy cannot have."""
    chosen = []
    for name in cfg.branches:
        branch = BRANCHES.get(name)
        if branch is None:
            raise ConfigError(
                f"unknown branch {name!r} in branches; choose from {', '.join(BRANCHES)}"
            )
        if branch in chosen:
            raise ConfigError(f"branch {name!r} is listed twice in branches; list it once")
        branch.check(branch_args(cfg, name), timeline)
        if name == "instability" and strategy.during_training:
            raise ConfigError(
                f"branches=[instability] does not apply to pruning.method={strategy.name!r}, "
                "whose mask changes during training; remove it"
            )
        if name in ("lr_rewind", "finetune") and strategy.scores_initial_weights:
            raise ConfigError(
                f"branches=[{name}] does not apply to pruning.method={strategy.name!r}: its "
                "masks are chosen at initialisation, not from trained weights; remove it"
            )
        chosen.append(branch)
    for name in BRANCHES:
        args = branch_args(cfg, name)
        if name not in cfg.branches and args != type(args)():
            raise ConfigError(
                f"branch.{name} is set but {name} is not in branches; add it "
                f"(branches=[...,{name}]) or remove branch.{name}"
            )
    return chosen


def check_branch_networks(cfg: Config, branches: list[Branch], batch_stats: Any) -> None:
    """The chosen branches' arguments checked against the built network (one ConfigError
    line, e.g. BatchNorm statistics to re-estimate on a network without BatchNorm)."""
    for branch in branches:
        branch.check_network(branch_args(cfg, branch.name), cfg, batch_stats)


__all__ = [
    "BRANCHES",
    "Branch",
    "BranchInputs",
    "BranchRun",
    "branch_args",
    "check_branch_networks",
    "check_branches",
]
