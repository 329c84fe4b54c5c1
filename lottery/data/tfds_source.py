"""tensorflow-datasets' image classification datasets from their prepared ArrayRecord files.

MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 by their names (``dataset.name=cifar10``), and any
other as ``dataset.name=tfds:NAME[/CONFIG][:VERSION]`` (:func:`load_any`), its classes and
image shape read from the builder's info.

``tfds.data_source`` reads the prepared ``array_record`` files and decodes each example with
numpy and PIL, so reading needs no TensorFlow. Writing them (download and prepare) does: see
:mod:`lottery.data.prepare`. Nothing is ever downloaded here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
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
    folder = name.split(":")[0].split("/")[0]  # "name/config:version" lies in DIR/name
    prepare = (
        f"on a machine with internet run `python -m lottery.data.prepare {name} --data_dir DIR`"
        f"{_PREPARE_NOTE.get(name, '')}, then copy DIR/{folder} into {root} or set "
        "dataset.path=DIR"
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


def read_split(
    source: Sequence[dict[str, Any]], image: str = "image", label: str = "label"
) -> tuple[np.ndarray, np.ndarray]:
    """Every example of a data source: images float32 in [0, 1] (N, H, W, C), labels int32.

    ``image`` and ``label`` name the two features of an example.
    """
    n = len(source)
    if n == 0:
        raise ConfigError(f"{source!r} has no examples; prepare the dataset again")
    first = np.asarray(source[0][image])
    if first.ndim == 2:
        first = first[..., None]
    images = np.empty((n, *first.shape), np.uint8)
    labels = np.empty(n, np.int32)
    # One example at a time: ``__getitem__`` is the data source protocol (``__getitems__`` is
    # barely faster and broken under ``tfds.testing.mock_data``).
    for i in range(n):
        example = source[i]
        images[i] = np.reshape(example[image], first.shape)
        labels[i] = example[label]
    x = images.astype(np.float32)
    x /= 255.0
    return x, labels


def load(name: str, data_dir: str | None) -> tuple[np.ndarray, ...]:
    """(train images, train labels, test images, test labels) of a tfds image dataset."""
    train_x, train_y = read_split(open_split(name, "train", data_dir))
    test_x, test_y = read_split(open_split(name, "test", data_dir))
    return train_x, train_y, test_x, test_y


PREFIX = "tfds:"


@dataclass(frozen=True)
class ImageClassification:
    """What :func:`load_any` needs of a tfds dataset, from its builder's info."""

    image: str  # feature names
    label: str
    shape: tuple[int, ...]
    num_classes: int


def builder_of(spec: str, data_dir: str | None) -> Any:
    """``tfds.builder(spec)`` ("name", "name/config", "name:1.2.0"), or a one-line ConfigError."""
    tfds = _tfds()
    try:
        return tfds.builder(spec, data_dir=resolve_data_dir(data_dir))
    except Exception as error:
        if isinstance(error, tfds.core.registered.DatasetNotFoundError):
            reason = "tensorflow-datasets knows no such dataset"
        else:  # an unknown config or version: tfds' first line says which exist
            reason = str(error).strip().splitlines()[0]
            # drop tfds' 'Failed to construct dataset "x", builder_kwargs "{...}": ' prefix
            reason = reason.rsplit('}": ', 1)[-1].split(" Here are")[0].rstrip(".:")[:240]
        raise ConfigError(
            f"dataset.name={PREFIX + spec!r}: {reason}; see "
            "https://www.tensorflow.org/datasets/catalog for names, configs and versions"
        ) from None


def describe(spec: str, data_dir: str | None) -> ImageClassification:
    """The image and label features of the tfds dataset ``spec``, or a one-line ConfigError
    saying why it is not an image classification dataset this framework can hold."""
    tfds = _tfds()
    info = builder_of(spec, data_dir).info
    image, label = info.supervised_keys or ("image", "label")
    features = {key: info.features[key] for key in info.features}
    named = f"dataset.name={PREFIX + spec!r}"
    if not (
        isinstance(image, str)
        and isinstance(label, str)
        and isinstance(features.get(image), tfds.features.Image)
        and isinstance(features.get(label), tfds.features.ClassLabel)
    ):
        raise ConfigError(
            f"{named} is not an image classification dataset (its supervised keys are "
            f"{info.supervised_keys}, its features {', '.join(features.keys())}); choose one "
            "with an Image and a ClassLabel feature, or save it with np.savez and use "
            "dataset.name=npz"
        )
    shape = tuple(features[image].shape)
    if None in shape or features[image].np_dtype != np.uint8:
        raise ConfigError(
            f"{named} has images of shape {shape} and dtype {features[image].np_dtype.__name__}; "
            "only uint8 images of one fixed size can be held in memory: resize them, save "
            "them with np.savez and use dataset.name=npz"
        )
    return ImageClassification(image, label, shape, int(features[label].num_classes))


def check_split(spec: str, data_dir: str | None, split: str, key: str) -> None:
    """A one-line ConfigError if a prepared dataset has no split named in ``split``
    (tfds' syntax: ``train``, ``train[:90%]``, ``train+extra``)."""
    builder = builder_of(spec, data_dir)
    known = list(builder.info.splits.keys()) if builder.is_prepared() else []
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if known and base not in known:
            raise ConfigError(
                f"{key}={split!r}: {PREFIX + spec} has no split {base!r}; choose one of "
                f"{', '.join(known)}"
            )


def load_any(
    spec: str, data_dir: str | None, train_split: str, test_split: str
) -> tuple[tuple[np.ndarray, ...], int]:
    """((train x, train y, test x, test y), number of classes) of ``tfds:spec``."""
    what = describe(spec, data_dir)
    arrays = []
    for split, key in ((train_split, "dataset.train_split"), (test_split, "dataset.test_split")):
        check_split(spec, data_dir, split, key)
        arrays += read_split(open_split(spec, split, data_dir), what.image, what.label)
    labels = np.concatenate([arrays[1], arrays[3]])
    if labels.min() < 0 or labels.max() >= what.num_classes:
        raise ConfigError(
            f"{PREFIX + spec} has labels out of [0, {what.num_classes}) in its files; "
            "prepare the dataset again"
        )
    return tuple(arrays), what.num_classes
