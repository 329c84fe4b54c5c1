"""The small-dense baseline (Zhu & Gupta 2017): a dense network as small as the ticket.

A pruned network is only worth its trouble if it beats a plain, narrower network of the same
size. This branch scales every hidden width of the experiment's model by one factor, chosen
so that the narrower network's parameter count is the closest to the level's nonzero
count, and trains it from a fresh initialisation for the whole schedule (the dense level's
training budget: steps 0 to the end), on the level's data order. Its row in the curve sits
at the ticket's size: ``weights_remaining_pct`` is its prunable weights against the full
network's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax

from lottery.branches.base import BranchInputs, BranchRun
from lottery.config.schema import SmallDenseBranch
from lottery.pruning import Mask, count_alive, full_mask, prunable_paths

SMALL_DENSE_STREAM = 1003  # its initialisation's random stream (see controls.py)
BISECTIONS = 16  # widths are integers: 2^-16 of a factor is finer than one channel
TOLERANCE = 0.02  # off the target by more than this fraction, the branch says so


def parameter_count(network: Any) -> int:
    """All parameters of ``network`` (BatchNorm statistics are not parameters)."""
    params = jax.eval_shape(network.init, jax.random.key(0))[0]
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))


def small_dense_network(
    network: Any, target: int, scaled_network: Callable[[Any, float], Any]
) -> tuple[Any, float]:
    """The network of ``scaled_network(network, factor)`` whose parameter count is closest
    to ``target``, and its factor."""
    low, high = 0.0, 1.0
    best = (abs(parameter_count(network) - target), network, 1.0)
    for _ in range(BISECTIONS):
        factor = (low + high) / 2
        candidate = scaled_network(network, factor)
        count = parameter_count(candidate)
        best = min(best, (abs(count - target), candidate, factor), key=lambda b: b[0])
        if count > target:
            high = factor
        else:
            low = factor
    return best[1], best[2]


def small_dense(inputs: BranchInputs, args: SmallDenseBranch) -> list[BranchRun]:
    """One dense training of the narrower network (see the module's docstring)."""
    plan = inputs.plan
    target = count_alive(inputs.mask, list(_all_paths(inputs.mask)))
    if inputs.narrower is None:
        raise ValueError("small_dense needs BranchInputs.narrower (a network's narrower copy)")
    network, factor = small_dense_network(plan.network, target, inputs.narrower)
    off = abs(parameter_count(network) - target) / max(target, 1)
    if off > TOLERANCE:  # widths are integers: a small network's count moves in big steps
        print(
            f"warning: small_dense at level {inputs.seeds[1]}: the closest narrower network has "
            f"{parameter_count(network):,} parameters, {100 * off:.1f}% off the level's "
            f"{target:,} (its widths are too small to come closer)",
            file=sys.stderr, flush=True,
        )
    params = jax.eval_shape(network.init, jax.random.key(0))[0]
    prunable = prunable_paths(params, plan.cfg.pruning.prunable)
    full = len(plan.prunable) and count_alive(full_mask(plan.init_params), plan.prunable)

    def start() -> tuple[Any, Any, Mask]:
        seed, level = inputs.seeds
        key = jax.random.fold_in(jax.random.key(seed), SMALL_DENSE_STREAM)
        weights, batch_stats = jax.device_get(
            network.init(jax.random.fold_in(jax.random.fold_in(key, level), args.seed))
        )
        return weights, batch_stats, full_mask(weights)

    def finalize(weights: Any, batch_stats: Any) -> dict[str, Any]:
        alive = count_alive(full_mask(weights), prunable)
        return {
            "weights_remaining_pct": 100 * alive / full,
            "small_dense": {
                "width_factor": factor,
                "params": parameter_count(network),
                "target_params": target,
            },
        }

    run = BranchRun(
        "small_dense",
        {"seed": args.seed, "params": parameter_count(network)},
        0,
        start,
        finalize=finalize,
        network=network,
    )
    return [run]


def check_small_dense(args: SmallDenseBranch, timeline: Any) -> None:
    from lottery.branches.controls import check_seed

    check_seed("small_dense", args.seed)


def _all_paths(mask: Mask) -> list[str]:
    from lottery.pruning import flatten

    return list(flatten(mask))
