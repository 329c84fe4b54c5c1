"""What a compacted network buys at inference: measured latency and bytes to store.

A mask alone does not make a network faster or smaller: the zeros are still multiplied and
stored. These two numbers let a caller compare the dense or masked network with its
compaction (:func:`lottery.deploy.compact`) on the same machine.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lottery.models.network import BatchStats, Network, Params
from lottery.pruning.mask import flatten

# The batch sizes latency is reported at: one request, and a full batch.
LATENCY_BATCHES = (1, 256)
# Seconds of timed calls a run's own figures (a level's summary, deploy.measure) spend on one
# median: the calls stop after this much time once 3 are timed, so a network whose batch of
# 256 takes a second is timed 3 times, not 20 (minutes per level for an ImageNet ResNet).
FIGURE_BUDGET_S = 1.0


def inference_latency(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    batch_size: int,
    repeats: int = 20,
    budget_s: float | None = None,
) -> float:
    """Median seconds of one jitted eval-mode forward pass on zeros of shape
    ``(batch_size, *network.input_shape)``, after a warm-up call that compiles it (at most
    ``repeats`` calls; see :func:`timed_median` for ``budget_s``).

    Variables are put on the device first, so only the computation is measured.
    """
    apply = jax.jit(lambda p, b, x: network.apply(p, b, x, train=False)[0])
    params, batch_stats = jax.device_put((params, batch_stats))
    return forward_latency(
        lambda x: apply(params, batch_stats, x), network.input_shape, batch_size, repeats,
        budget_s,
    )


def forward_latency(
    forward: Callable[[Any], Any],
    input_shape: tuple[int, ...],
    batch_size: int,
    repeats: int = 20,
    budget_s: float | None = None,
) -> float:
    """Median seconds of ``forward(x)`` on zeros of shape ``(batch_size, *input_shape)``,
    each call timed to ``block_until_ready``, after a warm-up call that compiles it."""
    x = jnp.zeros((batch_size, *input_shape), jnp.float32)
    jax.block_until_ready(forward(x))
    return timed_median(lambda: jax.block_until_ready(forward(x)), repeats, budget_s)


def timed_median(call: Callable[[], Any], repeats: int, budget_s: float | None = None) -> float:
    """Median seconds of ``repeats`` calls of ``call``; with ``budget_s``, fewer where the
    calls are slow: they stop once 3 are timed and together took ``budget_s`` seconds."""
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if budget_s is not None and len(times) >= 3 and sum(times) >= budget_s:
            break
    return statistics.median(times)


def size_on_disk(params: Any) -> int:
    """Bytes of an uncompressed ``np.savez`` of every leaf as float32 (dense storage, as a
    checkpoint of the network would take: zeros of a mask cost as much as any weight)."""
    buffer = io.BytesIO()
    arrays = {path: np.asarray(leaf, np.float32) for path, leaf in flatten(params).items()}
    np.savez(buffer, **arrays)
    return buffer.getbuffer().nbytes
