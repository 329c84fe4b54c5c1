"""The order in which training examples are visited: one permutation per epoch."""

from __future__ import annotations

import numpy as np


def batch_order(seed: int, num_examples: int, batch_size: int, num_steps: int) -> np.ndarray:
    """Example indices of every training step, shaped (num_steps, batch_size), int32.

    Each epoch is a fresh permutation of the training set from a generator seeded by ``seed``
    and the epoch number, with the last partial batch dropped. Step ``s`` always sees the
    same batch for a given seed, whichever level trains it: rewinding to step k replays
    exactly the data of steps k..T, and a resumed run sees the data it would have seen.
    """
    steps_per_epoch = num_examples // batch_size
    epochs = -(-num_steps // steps_per_epoch)
    per_epoch = steps_per_epoch * batch_size
    order = np.empty((epochs, per_epoch), dtype=np.int32)
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        order[epoch] = rng.permutation(num_examples)[:per_epoch]
    return order.reshape(-1, batch_size)[:num_steps]
