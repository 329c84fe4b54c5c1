"""The in-memory dataset every source returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]  # images float32 (B, ...), labels int32 (B,)


@dataclass(frozen=True)
class Split:
    """Examples and integer labels of one split, as host arrays."""

    x: np.ndarray  # float32, (N, ...) — images are NHWC
    y: np.ndarray  # int32, (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """Train, validation (held out of train) and test splits of one dataset."""

    name: str
    train: Split
    validation: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train)


@dataclass(frozen=True)
class StreamingDataset:
    """A dataset read batch by batch on the host (ImageNet): too big to hold on the device."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    num_train: int
    # (batch_size, seed, first_step) -> endless training batches from step ``first_step`` on;
    # step s gets the same batch for a seed whatever the first step, so a level can start at
    # the rewind step and see the batches level 0 saw.
    train_batches: Callable[[int, int, int], Iterator[Batch]]
    # split ("val", "test") -> batch_size -> one pass over that split
    eval_batches: dict[str, Callable[[int], Iterator[Batch]]]
    # Identifies the files read (names, sizes), standing for a digest of every example.
    fingerprint: str = ""
    # Optional, for one experiment over several processes: (batch_size, seed, first_step,
    # process, processes) -> this process's rows of the same training batches (rows
    # process * r to (process + 1) * r of each, r = batch_size // processes), so that the
    # processes read each batch once between them. Without it, every process reads every
    # whole batch and keeps the rows its devices hold.
    process_train_batches: Callable[[int, int, int, int, int], Iterator[Batch]] | None = None


def hold_out(x: np.ndarray, y: np.ndarray, validation_size: int) -> tuple[Split, Split]:
    """Split the last ``validation_size`` training examples off as the validation set."""
    cut = len(y) - validation_size
    return Split(x[:cut], y[:cut]), Split(x[cut:], y[cut:])


def normalize(train: Split, *others: Split) -> tuple[Split, ...]:
    """Standardise every split with the training split's per-channel mean and std."""
    axes = tuple(range(train.x.ndim - 1)) if train.x.ndim > 2 else None
    mean = train.x.mean(axis=axes, dtype=np.float64).astype(np.float32)
    std = train.x.std(axis=axes, dtype=np.float64).astype(np.float32)
    std = np.where(std > 0, std, np.float32(1.0))
    # float32 throughout and one new array per split: datasets are held in memory whole.
    return tuple(Split(np.divide(s.x - mean, std, dtype=np.float32), s.y) for s in (train, *others))
