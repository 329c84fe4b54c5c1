"""The order in which training examples are visited: one permutation per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def batch_order(
    seed: int | Sequence[int], num_examples: int, batch_size: int, num_steps: int
) -> np.ndarray:
    """Example indices of every training step, shaped (num_steps, batch_size), int32.

    Each epoch is a fresh permutation of the training set from a generator seeded by ``seed``
    (an int or a sequence of ints, e.g. ``(data_seed, level)``) and the epoch number, with the
    last partial batch dropped. Step ``s`` always sees the same batch for a given seed, however
    the steps are split into calls: a resumed run sees the data it would have seen, and two
    levels given the same seed (``train.replay_data_order``) replay the same batches.
    """
    entropy = [seed] if isinstance(seed, int) else list(seed)
    steps_per_epoch = num_examples // batch_size
    epochs = -(-num_steps // steps_per_epoch)
    per_epoch = steps_per_epoch * batch_size
    order = np.empty((epochs, per_epoch), dtype=np.int32)
    for epoch in range(epochs):
        rng = np.random.default_rng([*entropy, epoch])
        order[epoch] = rng.permutation(num_examples)[:per_epoch]
    return order.reshape(-1, batch_size)[:num_steps]


def stream_seed(data_seed: int, stream: int) -> int:
    """One 32-bit seed for the data order of ``stream`` (a level), for host pipelines (grain)."""
    return int(np.random.SeedSequence([data_seed, stream]).generate_state(1)[0])
