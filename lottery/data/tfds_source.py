"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from tensorflow-datasets' ArrayRecord files.

``tfds.data_source`` reads the prepared ``array_record`` files and decodes each example with
numpy and PIL, so reading needs no TensorFlow. Writing them (download and prepare) does: see
:mod:`lottery.data.prepare`. Nothing is ever downloaded here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lottery.config.errors import ConfigError

# tfds name -> number of classes. Every one has a ``train`` and a ``test`` split of
# ``{"image": uint8 (H, W, C), "label": int}`` examples.
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}

# Extra instructions for datasets tfds cannot download by itself.
_PREPARE_NOTE = {
    "imagenet2012": (
        " (imagenet2012 also needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, "
        "downloaded by hand, in DIR/downloads/manual or --manual_dir)"
    ),
}


def _tfds() -> Any:
    """tensorflow_datasets, imported on first use (it takes most of a second).

    Its absl warnings (e.g. "Variant folder ... has no dataset_info.json" while looking for
    missing data) are silenced: we say what is wrong in one line of our own.
    """
    import tensorflow_datasets

    logging.getLogger("absl").setLevel(logging.ERROR)
    return tensorflow_datasets


def resolve_data_dir(data_dir: str | None) -> str | None:
    """``data_dir`` with ``~`` expanded; None (tfds' default) stays None."""
    return os.path.expanduser(data_dir) if data_dir else None


def open_split(name: str, split: str, data_dir: str | None) -> Sequence[dict[str, Any]]:
    """The random-access ``tfds.data_source`` of one split, or a one-line ConfigError.

    ``data_dir`` None means tfds' default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    """
    tfds = _tfds()
    data_dir = resolve_data_dir(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:
        # What tfds raises for missing data is misleading (a NotImplementedError about the
        # TFRECORD format), so look at the directory to say what is actually wrong.
        raise ConfigError(_unreadable_message(name, split, data_dir, error)) from error


def _unreadable_message(name: str, split: str, data_dir: str | None, error: Exception) -> str:
    builder = _tfds().builder(name, data_dir=data_dir)
    root = str(builder.data_dir_root)
    prepare = (
        f"on a machine with internet run `python -m lottery.data.prepare {name} --data_dir DIR`"
        f"{_PREPARE_NOTE.get(name, '')}, then copy DIR/{name} into {root} or set dataset.path=DIR"
    )
    if not builder.is_prepared():
        where = f"tfds data_dir {root} (nothing at {builder.data_dir})"
        return f"{name} is not prepared in {where}; {prepare}"
    detail = " ".join(str(error).split())[:200]
    return (
        f"tfds cannot read {name} split {split!r} from {builder.data_dir} "
        f"({type(error).__name__}: {detail}); it must be prepared as array_record: {prepare}"
    )


def files_fingerprint(name: str, data_dir: str | None) -> str:
    """A digest of the names and sizes of a prepared dataset's files (for streamed datasets,
    too big to read whole at start): another version or another preparation hashes apart."""
    import hashlib

    root = Path(_tfds().builder(name, data_dir=resolve_data_dir(data_dir)).data_dir)
    digest = hashlib.blake2b(digest_size=8)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root)}:{file.stat().st_size};".encode())
    return digest.hexdigest()


def read_split(source: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Every example of a data source: images float32 in [0, 1] (N, H, W, C), labels int32."""
    n = len(source)
    if n == 0:
        raise ConfigError(f"{source!r} has no examples; prepare the dataset again")
    first = np.asarray(source[0]["image"])
    if first.ndim == 2:
        first = first[..., None]
    images = np.empty((n, *first.shape), np.uint8)
    labels = np.empty(n, np.int32)
    # One example at a time: ``__getitem__`` is the data source protocol (``__getitems__`` is
    # barely faster and broken under ``tfds.testing.mock_data``).
    for i in range(n):
        example = source[i]
        images[i] = np.reshape(example["image"], first.shape)
        labels[i] = example["label"]
    x = images.astype(np.float32)
    x /= 255.0
    return x, labels


def load(name: str, data_dir: str | None) -> tuple[np.ndarray, ...]:
    """(train images, train labels, test images, test labels) of a tfds image dataset."""
    train_x, train_y = read_split(open_split(name, "train", data_dir))
    test_x, test_y = read_split(open_split(name, "test", data_dir))
    return train_x, train_y, test_x, test_y
