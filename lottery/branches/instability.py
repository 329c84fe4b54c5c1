"""Instability (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis"): two copies of a level trained from the same start on different data orders,
and the test error along the straight line between them.

The first copy is the level itself; the branch trains the second with another data order.
The error barrier is the largest error on the line above the mean of the two ends' errors;
about 0 means the two copies found the same linearly connected minimum (the training is
stable). BatchNorm statistics are interpolated like the weights (not re-estimated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from lottery.branches.base import BranchInputs, BranchRun
from lottery.config import ConfigError
from lottery.config.schema import InstabilityBranch
from lottery.pruning import Mask, apply_mask

# Data streams of second copies: far past any level number, one block per data seed.
STREAM_BLOCK = 1 << 20


def interpolate(a: Any, b: Any, alpha: float) -> Any:
    """``(1 - alpha) a + alpha b`` leaf by leaf (a pruned weight, 0 in both, stays 0)."""
    return jax.tree.map(lambda x, y: (1.0 - alpha) * np.asarray(x) + alpha * np.asarray(y), a, b)


def error_path(
    evaluate: Callable[[Any, Any], dict[str, float]],
    a: tuple[Any, Any],
    b: tuple[Any, Any],
    points: int,
) -> tuple[list[float], list[float]]:
    """(alphas, test errors) at ``points`` evenly spaced points from ``a`` to ``b``."""
    alphas = [float(x) for x in np.linspace(0.0, 1.0, points)]
    errors = []
    for alpha in alphas:
        params, batch_stats = interpolate(a[0], b[0], alpha), interpolate(a[1], b[1], alpha)
        errors.append(1.0 - evaluate(params, batch_stats)["test/accuracy"])
    return alphas, errors


def error_barrier(errors: list[float]) -> float:
    """The largest error on the path above the mean of the ends' errors (Frankle et al.)."""
    return max(errors) - (errors[0] + errors[-1]) / 2.0


def instability(inputs: BranchInputs, args: InstabilityBranch) -> list[BranchRun]:
    """A second copy of the level on data seed ``args.data_seed``; 0 gives the level's own
    order, a copy identical to the level (barrier 0, a check of the measurement)."""
    plan = inputs.plan
    stream = (
        plan.data_stream(inputs.level)
        if args.data_seed == 0
        else STREAM_BLOCK * args.data_seed + inputs.level
    )

    def start() -> tuple[Any, Any, Mask]:
        params, batch_stats = inputs.rewind_point(plan.rewind_step)
        return jax.device_get(apply_mask(params, inputs.mask)), batch_stats, inputs.mask

    def finalize(params: Any, batch_stats: Any) -> dict[str, Any]:
        alphas, errors = error_path(
            inputs.evaluate, inputs.trained(), (params, batch_stats), args.points
        )
        return {
            "instability": {"alphas": alphas, "test_errors": errors},
            "instability_barrier": error_barrier(errors),
        }

    run_args = {"data_seed": args.data_seed, "points": args.points}
    return [BranchRun("instability", run_args, plan.rewind_step, start, None, stream, finalize)]


def check_instability(args: InstabilityBranch, timeline: Any) -> None:
    if args.points < 2:
        raise ConfigError(
            f"branch.instability.points={args.points} must be at least 2 (the two ends)"
        )
    if not 0 <= args.data_seed < 2**11:  # streams of 2^20 levels each, in a 32-bit stream id
        raise ConfigError(
            f"branch.instability.data_seed={args.data_seed} must be in [0, 2048), e.g. 1"
        )
