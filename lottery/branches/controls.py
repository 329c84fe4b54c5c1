"""The controls of a lottery ticket: its mask with a new initialisation, and a random mask.

Both train exactly as the ticket does (from the rewind step k to the end, the same schedule
and data order), so the only difference from the level is the weights or the mask.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lottery.branches.base import BranchInputs, BranchRun
from lottery.config import ConfigError
from lottery.config.schema import RandomPruneBranch, RandomReinitBranch
from lottery.pruning import Mask, apply_mask
from lottery.pruning.random_masks import RANDOM_SCOPES, random_mask_like

# Keeps the branches' random streams apart from initialisation (0) and data (1).
REINIT_STREAM, RANDOM_PRUNE_STREAM = 1001, 1002


def reinitialized(network: Any, seeds: tuple[int, int], branch_seed: int) -> tuple[Any, Any]:
    """A fresh initialisation of ``network`` for (replicate seed, level, branch seed)."""
    seed, level = seeds
    key = jax.random.fold_in(jax.random.key(seed), REINIT_STREAM)
    key = jax.random.fold_in(jax.random.fold_in(key, level), branch_seed)
    return network.init(key)


def random_reinit(inputs: BranchInputs, args: RandomReinitBranch) -> list[BranchRun]:
    """The level's mask on a new random initialisation (Frankle & Carbin 2019)."""
    plan = inputs.plan

    def start() -> tuple[Any, Any, Mask]:
        params, batch_stats = reinitialized(plan.network, inputs.seeds, args.seed)
        return jax.device_get(apply_mask(params, inputs.mask)), batch_stats, inputs.mask

    return [BranchRun("random_reinit", {"seed": args.seed}, plan.rewind_step, start)]


def random_prune(inputs: BranchInputs, args: RandomPruneBranch) -> list[BranchRun]:
    """A random mask as sparse as the level's, on the rewind point's weights."""
    plan = inputs.plan

    def start() -> tuple[Any, Any, Mask]:
        rng = np.random.default_rng([*inputs.seeds, RANDOM_PRUNE_STREAM, args.seed])
        mask = random_mask_like(inputs.mask, plan.prunable, args.scope, rng)
        params, batch_stats = inputs.rewind_point(plan.rewind_step)
        return jax.device_get(apply_mask(params, mask)), batch_stats, mask

    run_args = {"scope": args.scope, "seed": args.seed}
    return [BranchRun("random_prune", run_args, plan.rewind_step, start)]


def check_seed(name: str, seed: int) -> None:
    """A branch seed is a 32-bit unsigned integer (it is folded into a PRNG key)."""
    if not 0 <= seed < 2**32:
        raise ConfigError(f"branch.{name}.seed={seed} must be in [0, 2^32), e.g. 0 or 1")


def check_random_reinit(args: RandomReinitBranch, timeline: Any) -> None:
    check_seed("random_reinit", args.seed)


def check_random_prune(args: RandomPruneBranch, timeline: Any) -> None:
    check_seed("random_prune", args.seed)
    if args.scope not in RANDOM_SCOPES:
        raise ConfigError(
            f"unknown branch.random_prune.scope {args.scope!r}; choose one of "
            f"{', '.join(RANDOM_SCOPES)}"
        )
