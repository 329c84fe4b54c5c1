"""A digest of the data a run trains and evaluates on, so that it enters the experiment hash.

Two IDX directories, two tfds data_dirs or two versions of a generated dataset that differ in
one pixel give two different result folders: the hash is of what was read, not of its name
or path. BLAKE2b is fast enough that CIFAR-10's arrays cost under a second
(docs/benchmarks.md, "Design measurements").
"""

from __future__ import annotations

import hashlib

import numpy as np

from lottery.data.dataset import Dataset, StreamingDataset


def _update(digest: hashlib.blake2b, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.reshape(-1).view(np.uint8))  # the bytes, without a copy


def fingerprint(dataset: Dataset | StreamingDataset) -> str:
    """16 hex digits identifying the examples and labels of every split (as prepared:
    after the validation hold-out and normalisation, which the config also names)."""
    if isinstance(dataset, StreamingDataset):
        return dataset.fingerprint
    digest = hashlib.blake2b(digest_size=8)
    digest.update(str(dataset.num_classes).encode())
    for split in (dataset.train, dataset.validation, dataset.test):
        _update(digest, split.x)
        _update(digest, split.y)
    return digest.hexdigest()
