"""Branches: extra trainings from a finished level's mask, by name (``branches=[...]``).

- ``random_reinit``: the same mask, a new initialisation;
- ``random_prune``: a random mask with the same per-layer (or global) count;
- ``lr_rewind``: the trained weights, the learning-rate schedule replayed from step k;
- ``finetune``: the trained weights, trained at the final learning rate;
- ``rewind_to``: the mask on several rewind points k;
- ``instability``: a second copy on another data order, and the error barrier between them;
- ``small_dense``: a narrower dense network with the ticket's parameter count (Zhu & Gupta).

Each branch's arguments are ``branch.<name>.*`` (typed in :mod:`lottery.config.schema`). A
branch of your own is ``branches=[package.module:NAME]`` or an entry point of the group
``lottery.branches`` (:mod:`lottery.branches.own`), its arguments ``branch.own.<name>.*``.
What a strategy permits is asked of each branch's capabilities, never of its name.
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
from lottery.branches.own import own_branch
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
    "lr_rewind": Branch("lr_rewind", lr_rewind, check_lr_rewind, from_trained_weights=True),
    "finetune": Branch("finetune", finetune, check_finetune, from_trained_weights=True),
    "rewind_to": Branch("rewind_to", rewind_to, check_rewind_to),
    "instability": Branch(
        "instability",
        instability,
        check_instability,
        check_instability_network,
        needs_fixed_mask=True,
    ),
    "small_dense": Branch("small_dense", small_dense, check_small_dense),
}


def branch_args(cfg: Config, name: str) -> Any:
    """The arguments of branch ``name``: the typed ``branch.<name>`` of a built-in branch;
    ``branch.own.<name>`` (a dict, typed by the branch itself) of one of your own."""
    if name in BRANCHES:
        return getattr(cfg.branch, name)
    return cfg.branch.own.get(name, {})


def find_branch(entry: str) -> Branch:
    """The branch ``entry`` of ``branches`` names: built in, an entry point of an installed
    package, or an import path; one ConfigError line if none."""
    branch = BRANCHES.get(entry) or own_branch(entry, set(BRANCHES))
    if branch is None:
        raise ConfigError(
            f"unknown branch {entry!r} in branches; choose from {', '.join(BRANCHES)}, or give "
            "a branch of your own as package.module:NAME"
        )
    return branch


def check_branches(cfg: Config, timeline: Any, strategy: Any) -> list[Branch]:
    """The branches ``cfg.branches`` names, their arguments checked; one ConfigError line
    for an unknown or repeated name, a bad argument, or a branch the strategy cannot have."""
    chosen: list[Branch] = []
    for entry in cfg.branches:
        branch = find_branch(entry)
        if branch.name in {other.name for other in chosen}:
            raise ConfigError(f"branch {entry!r} is listed twice in branches; list it once")
        branch.check(branch_args(cfg, branch.name), timeline)
        check_strategy_permits(branch, entry, strategy)
        chosen.append(branch)
    check_no_arguments_left(cfg, {branch.name for branch in chosen})
    return chosen


def check_strategy_permits(branch: Branch, entry: str, strategy: Any) -> None:
    """One ConfigError line if ``branch`` needs what the pruning method cannot give."""
    if branch.needs_fixed_mask and strategy.during_training:
        raise ConfigError(
            f"branches=[{entry}] does not apply to pruning.method={strategy.name!r}, "
            "whose mask changes during training; remove it"
        )
    if branch.from_trained_weights and strategy.scores_initial_weights:
        raise ConfigError(
            f"branches=[{entry}] does not apply to pruning.method={strategy.name!r}: its "
            "masks are chosen at initialisation, not from trained weights; remove it"
        )


def check_no_arguments_left(cfg: Config, chosen: set[str]) -> None:
    """One ConfigError line for arguments of a branch that ``branches`` does not list."""
    for name in BRANCHES:
        args = branch_args(cfg, name)
        if name not in chosen and args != type(args)():
            raise ConfigError(
                f"branch.{name} is set but {name} is not in branches; add it "
                f"(branches=[...,{name}]) or remove branch.{name}"
            )
    for name in cfg.branch.own:
        if name not in chosen:
            raise ConfigError(
                f"branch.own.{name} is set but no branch named {name} is in branches; add "
                f"it (branches=[...,package.module:NAME]) or remove branch.own.{name}"
            )


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
    "find_branch",
]
