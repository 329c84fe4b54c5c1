"""Dataset sources by name, the in-memory :class:`Dataset`, and batch orders.

``load(cfg)`` returns host arrays; the training loop puts them on the device once and gathers
batches by index inside jit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lottery.config import ConfigError, DatasetConfig
from lottery.data import generated, idx, npz_source, tfds_source
from lottery.data.batching import batch_order, stream_seed
from lottery.data.dataset import Dataset, Split, StreamingDataset, hold_out, normalize
from lottery.data.fingerprint import fingerprint

_FASHION_HINT = (
    "install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
    f"(files in {idx.FASHION_MNIST_DEBIAN_DIR}) or set dataset.path to a directory of IDX files"
)
_IDX_HINT = "set dataset.path to a directory holding train-/t10k- images and labels IDX files"

Loader = Callable[[DatasetConfig], tuple[np.ndarray, ...]]

# name -> (loader returning train_x, train_y, test_x, test_y; number of classes)
SOURCES: dict[str, tuple[Loader, int]] = {
    "mnist1d": (lambda cfg: generated.mnist1d(cfg.path), 10),
    "digits": (lambda cfg: generated.digits(), 10),
    "fashion_mnist_idx": (
        lambda cfg: idx.load_idx(cfg.path or idx.FASHION_MNIST_DEBIAN_DIR, _FASHION_HINT),
        10,
    ),
    "idx": (lambda cfg: idx.load_idx(cfg.path, _IDX_HINT), 10),
    # tensorflow-datasets' prepared array_record files in the data_dir ``dataset.path``.
    "mnist": (lambda cfg: tfds_source.load("mnist", cfg.path), 10),
    "fashion_mnist": (lambda cfg: tfds_source.load("fashion_mnist", cfg.path), 10),
    "cifar10": (lambda cfg: tfds_source.load("cifar10", cfg.path), 10),
    "cifar100": (lambda cfg: tfds_source.load("cifar100", cfg.path), 100),
}


def _imagenet(cfg: DatasetConfig) -> StreamingDataset:
    from lottery.data import imagenet  # grain and PIL load only when ImageNet is used

    return imagenet.imagenet_dataset(cfg.path, cfg.validation_size, cfg.image_size)


# Streamed from the host batch by batch (too big for memory); normalised by the stream.
STREAMING = {"imagenet2012": _imagenet}


# A user's own data: ``npz`` (one file of arrays, dataset.path) and ``tfds:NAME[/CONFIG][:VERSION]``
# (any tensorflow-datasets image classification dataset); they give their number of classes.
OWN = {
    "npz": lambda cfg: npz_source.load_npz(cfg.path, cfg.num_classes),
    tfds_source.PREFIX: lambda cfg: tfds_source.load_any(
        cfg.name.removeprefix(tfds_source.PREFIX), cfg.path, cfg.train_split, cfg.test_split
    ),
}


def check_name(name: str) -> None:
    """Fail with one line if ``name`` is not a known dataset (a ``tfds:`` name's dataset is
    looked up when it is loaded: tfds takes a second to import)."""
    if name == tfds_source.PREFIX:
        raise ConfigError(
            f"dataset.name={name!r} names no dataset; write tfds:NAME, e.g. tfds:svhn_cropped"
        )
    if name not in SOURCES and name not in STREAMING and _own(name) is None:
        known = ", ".join(sorted([*SOURCES, *STREAMING, "npz", "tfds:NAME"]))
        raise ConfigError(f"unknown dataset {name!r}; choose one of {known}")


def _own(name: str) -> str | None:
    """The key of :data:`OWN` that reads ``name``, if any."""
    if name.startswith(tfds_source.PREFIX):
        return tfds_source.PREFIX
    return name if name in OWN else None


def _arrays(cfg: DatasetConfig) -> tuple[tuple[np.ndarray, ...], int]:
    """(train x, train y, test x, test y) and the number of classes of ``cfg``'s source."""
    own = _own(cfg.name)
    if own is not None:
        return OWN[own](cfg)
    loader, num_classes = SOURCES[cfg.name]
    return loader(cfg), num_classes


def load(cfg: DatasetConfig) -> Dataset | StreamingDataset:
    """Load, hold out validation, and normalise the dataset ``cfg`` names."""
    check_name(cfg.name)
    if cfg.name in STREAMING:
        return STREAMING[cfg.name](cfg)
    (train_x, train_y, test_x, test_y), num_classes = _arrays(cfg)
    if not 0 <= cfg.validation_size < len(train_y):
        raise ConfigError(
            f"dataset.validation_size={cfg.validation_size} must be in [0, {len(train_y)}) "
            f"for {cfg.name}'s {len(train_y)} training examples"
        )
    train, validation = hold_out(train_x, train_y, cfg.validation_size)
    test = Split(test_x, test_y)
    if cfg.normalize:
        train, validation, test = normalize(train, validation, test)
    return Dataset(cfg.name, train, validation, test, num_classes)


__all__ = [
    "OWN",
    "SOURCES",
    "STREAMING",
    "Dataset",
    "Split",
    "StreamingDataset",
    "batch_order",
    "check_name",
    "fingerprint",
    "load",
    "stream_seed",
]
