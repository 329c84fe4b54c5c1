"""Instability (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis"): two copies of a level trained from the same start on different data orders,
and the test error along the straight line between them.

The first copy is the level itself; the branch trains the second with another data order.
The error barrier is the largest error on the line above the mean of the two ends' errors;
about 0 means the two copies found the same linearly connected minimum (the training is
stable).

BatchNorm statistics along the line (``batchnorm``): ``interpolate`` mixes them linearly like
the weights, Frankle et al.'s procedure (the default); ``recompute`` re-estimates them at each
point on a fixed set of training batches, as later work on linear mode connectivity does
(``reset_bn_stats`` in Jordan et al. 2022, "REPAIR"); ``both`` measures the two lines. The two
can disagree: a ResNet-20's barrier was 0.0125 interpolated and 0.0003 recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lottery.branches.base import BranchInputs, BranchRun
from lottery.config import ConfigError
from lottery.config.schema import InstabilityBranch
from lottery.data import StreamingDataset, batch_order, stream_seed
from lottery.data.augment import crop_flip
from lottery.pruning import Mask, apply_mask

# Data streams of second copies: far past any level number, one block per data seed.
STREAM_BLOCK = 1 << 20
# The data stream of the batches BatchNorm statistics are re-estimated on: past every level's
# and every second copy's (data_seed < 2^11, so those are below 2^31).
RECOMPUTE_STREAM = 1 << 31
BATCHNORM_SETTINGS = ("interpolate", "recompute", "both")
DEFAULTS = InstabilityBranch()

# (params, interpolated statistics) -> the statistics the network is evaluated with
Statistics = Callable[[Any, Any], Any]


def interpolate(a: Any, b: Any, alpha: float) -> Any:
    """``(1 - alpha) a + alpha b`` leaf by leaf (a pruned weight, 0 in both, stays 0)."""
    return jax.tree.map(lambda x, y: (1.0 - alpha) * np.asarray(x) + alpha * np.asarray(y), a, b)


def error_path(
    evaluate: Callable[[Any, Any], dict[str, float]],
    a: tuple[Any, Any],
    b: tuple[Any, Any],
    points: int,
    statistics: Statistics | None = None,
) -> tuple[list[float], list[float]]:
    """(alphas, test errors) at ``points`` evenly spaced points from ``a`` to ``b``; each
    point's BatchNorm statistics are the interpolated ones, or ``statistics(params, them)``."""
    alphas = [float(x) for x in np.linspace(0.0, 1.0, points)]
    errors = []
    for alpha in alphas:
        params, batch_stats = interpolate(a[0], b[0], alpha), interpolate(a[1], b[1], alpha)
        if statistics is not None:
            batch_stats = statistics(params, batch_stats)
        errors.append(1.0 - evaluate(params, batch_stats)["test/accuracy"])
    return alphas, errors


def error_barrier(errors: list[float]) -> float:
    """The largest error on the path above the mean of the ends' errors (Frankle et al.)."""
    return max(errors) - (errors[0] + errors[-1]) / 2.0


def statistics_estimator(network: Any) -> Callable[[Any, Any, Iterable[Any]], Any]:
    """``estimate(params, batch_stats, batches)``: BatchNorm statistics re-estimated on
    ``batches``, each statistic the average over the batches of that batch's own value.

    Each batch runs through ``params`` in train mode, where every BatchNorm normalises by the
    batch's own mean and variance (the variance as the layer itself computes it: biased, for
    Flax's BatchNorm); the old statistics play no part. The average of the batches' values is
    what PyTorch's ``reset_bn_stats`` (``momentum=None``, a cumulative average; Jordan et al.
    2022) keeps, but for PyTorch's unbiased running variance. ``batch_stats`` gives only the
    tree's shape.

    A batch's own values are read back from the layer's running-average update
    ``m * old + (1 - m) * batch``: from ``old = 0`` it gives ``(1 - m) * batch``, and the
    slope ``m`` is the difference from ``old = 1`` (on the first batch), so any momentum works.
    """
    forward = jax.jit(lambda params, stats, x: network.apply(params, stats, x, train=True)[1])

    def estimate(params: Any, batch_stats: Any, batches: Iterable[Any]) -> Any:
        params = jax.device_put(params)  # once, not with every batch
        zeros = jax.tree.map(jnp.zeros_like, batch_stats)
        total, rate, count = None, None, 0
        for x in batches:
            scaled = forward(params, zeros, x)  # (1 - m) * the batch's statistics
            if rate is None:
                ones = forward(params, jax.tree.map(jnp.ones_like, batch_stats), x)
                rate = jax.tree.map(lambda one, zero: 1.0 - jnp.mean(one - zero), ones, scaled)
            total = scaled if total is None else jax.tree.map(jnp.add, total, scaled)
            count += 1
        if total is None:
            raise ValueError("no batches to re-estimate the BatchNorm statistics on")
        return jax.tree.map(lambda t, r: np.asarray(t / (r * count)), total, rate)

    return estimate


def statistics_batches(plan: Any, count: int) -> Callable[[], Iterator[Any]]:
    """The fixed training batches statistics are re-estimated on: the first ``count`` batches
    (inputs only) that a training on data stream :data:`RECOMPUTE_STREAM` of the run's data
    seed sees, in its order and with its augmentation. The same batches at every point, for
    both settings, for every level and copy."""
    cfg, dataset = plan.cfg, plan.dataset
    batch = cfg.train.batch_size
    augment = jax.jit(crop_flip) if cfg.dataset.augment else None
    # As the trainer's key for a stream (Trainer.use_data_stream), folded in with each step.
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(plan.data_seed), 1), RECOMPUTE_STREAM
    )

    def augmented(step: int, x: Any) -> Any:
        x = jnp.asarray(x)
        return x if augment is None else augment(jax.random.fold_in(key, step), x)

    if isinstance(dataset, StreamingDataset):
        seed = stream_seed(plan.data_seed, RECOMPUTE_STREAM)

        def streamed() -> Iterator[Any]:
            batches = dataset.train_batches(batch, seed, 0)
            for step, (x, _) in zip(range(count), batches, strict=False):
                yield augmented(step, x)

        return streamed
    order = batch_order((plan.data_seed, RECOMPUTE_STREAM), dataset.num_train, batch, count)

    def held() -> Iterator[Any]:
        for step, index in enumerate(order):
            yield augmented(step, dataset.train.x[index])

    return held


def recompute_count(args: InstabilityBranch, timeline: Any) -> int:
    """How many batches the statistics are re-estimated on (``recompute_batches``)."""
    return timeline.iterations(args.recompute_batches, "branch.instability.recompute_batches")


def instability(inputs: BranchInputs, args: InstabilityBranch) -> list[BranchRun]:
    """A second copy of the level on data seed ``args.data_seed``; 0 gives the level's own
    order, a copy identical to the level (barrier 0, a check of the measurement)."""
    plan = inputs.plan
    stream = (
        plan.data_stream(inputs.level)
        if args.data_seed == 0
        else STREAM_BLOCK * args.data_seed + inputs.level
    )
    recomputes = args.batchnorm != "interpolate"
    count = recompute_count(args, plan.timeline) if recomputes else None

    def start() -> tuple[Any, Any, Mask]:
        params, batch_stats = inputs.rewind_point(plan.rewind_step)
        return jax.device_get(apply_mask(params, inputs.mask)), batch_stats, inputs.mask

    def finalize(params: Any, batch_stats: Any) -> dict[str, Any]:
        a, b = inputs.trained(), (params, batch_stats)
        paths = {}
        if args.batchnorm in ("interpolate", "both"):
            paths["interpolate"] = error_path(inputs.evaluate, a, b, args.points)
        if recomputes:
            estimate, batches = statistics_estimator(plan.network), statistics_batches(plan, count)
            paths["recompute"] = error_path(
                inputs.evaluate, a, b, args.points,
                lambda params, stats: estimate(params, stats, batches()),
            )
        has_batchnorm = bool(jax.tree.leaves(batch_stats))
        return instability_summary(paths, has_batchnorm, count)

    run_args: dict[str, Any] = {"data_seed": args.data_seed, "points": args.points}
    if recomputes:  # the default's arguments (and folder names) are as before the setting
        run_args.update(batchnorm=args.batchnorm, recompute_batches=count)
    return [BranchRun("instability", run_args, plan.rewind_step, start, None, stream, finalize)]


def instability_summary(
    paths: dict[str, tuple[list[float], list[float]]], has_batchnorm: bool, batches: int | None
) -> dict[str, Any]:
    """The summary entries of the measured lines (``paths``: setting -> (alphas, errors)).

    ``instability`` and ``instability_barrier`` are the chosen setting's line, interpolate's
    when both were measured; then recompute's errors are ``instability.test_errors_recompute``
    and its barrier ``instability_barrier_recompute``.
    """
    primary = next(iter(paths))
    alphas, errors = paths[primary]
    line: dict[str, Any] = {"alphas": alphas, "test_errors": errors}
    summary: dict[str, Any] = {"instability": line, "instability_barrier": error_barrier(errors)}
    if has_batchnorm:
        line["batchnorm"] = "both" if len(paths) > 1 else primary
    if batches is not None:
        line["recompute_batches"] = batches
    if primary != "recompute" and "recompute" in paths:
        line["test_errors_recompute"] = paths["recompute"][1]
        summary["instability_barrier_recompute"] = error_barrier(paths["recompute"][1])
    return summary


def check_instability(args: InstabilityBranch, timeline: Any) -> None:
    if args.points < 2:
        raise ConfigError(
            f"branch.instability.points={args.points} must be at least 2 (the two ends)"
        )
    if not 0 <= args.data_seed < 2**11:  # streams of 2^20 levels each, in a 32-bit stream id
        raise ConfigError(
            f"branch.instability.data_seed={args.data_seed} must be in [0, 2048), e.g. 1"
        )
    if args.batchnorm not in BATCHNORM_SETTINGS:
        raise ConfigError(
            f"unknown branch.instability.batchnorm {args.batchnorm!r}; choose one of "
            f"{', '.join(BATCHNORM_SETTINGS)}"
        )
    if args.batchnorm == "interpolate":
        if args.recompute_batches != DEFAULTS.recompute_batches:
            raise ConfigError(
                f"branch.instability.recompute_batches={args.recompute_batches!r} does not "
                "apply to branch.instability.batchnorm=interpolate, which re-estimates no "
                "statistics; remove it or set branch.instability.batchnorm=recompute"
            )
        return
    count = recompute_count(args, timeline)
    if count < 1:
        raise ConfigError(
            f"branch.instability.recompute_batches={args.recompute_batches!r} ({count} "
            "batches) must be at least one batch, e.g. 1ep or 100it"
        )


def check_instability_network(args: InstabilityBranch, cfg: Any, batch_stats: Any) -> None:
    """One line for statistics to re-estimate on a network that has none."""
    if args.batchnorm != "interpolate" and not jax.tree.leaves(batch_stats):
        raise ConfigError(
            f"branch.instability.batchnorm={args.batchnorm} does not apply to "
            f"model.name={cfg.model.name!r}, which has no BatchNorm statistics to re-estimate; "
            "remove it"
        )
