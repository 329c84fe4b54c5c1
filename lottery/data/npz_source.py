"""A user's own dataset from one ``.npz`` file: ``dataset.name=npz dataset.path=FILE.npz``.

The file holds four arrays, as ``np.savez(FILE, x_train=..., y_train=..., x_test=...,
y_test=...)`` writes them:

- ``x_train`` (N, ...) and ``x_test`` (M, ...): float (any width, read as float32) or uint8
  (divided by 255, to [0, 1], as the image datasets are); the same shape after the first axis;
  images NHWC, (N, H, W, C), for convolutional models and ``dataset.augment``; no NaN or inf.
- ``y_train`` (N,) and ``y_test`` (M,): integer labels in [0, num_classes), where num_classes is
  ``dataset.num_classes`` or, left at 0, the largest label + 1.

Other arrays in the file are ignored. Every check fails with one line naming the array and the
fix, before anything is written.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from lottery.config.errors import ConfigError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_SAVE = "np.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)"


def load_npz(path: str | None, num_classes: int = 0) -> tuple[tuple[np.ndarray, ...], int]:
    """((train x, train y, test x, test y), number of classes) of the file ``path``.

    x comes back float32, y int32, checked as the module docstring says.
    """
    arrays = _read(_file(path))
    x_train, x_test = (_examples(arrays[key], key) for key in ("x_train", "x_test"))
    y_train, y_test = (_labels(arrays[key], key) for key in ("y_train", "y_test"))
    _check_lengths(x_train, y_train, "train")
    _check_lengths(x_test, y_test, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(
            f"npz x_test has examples of shape {x_test.shape[1:]} and x_train of shape "
            f"{x_train.shape[1:]}; save both splits with the same shape after the first axis"
        )
    classes = _num_classes(y_train, y_test, num_classes)
    return (x_train, y_train, x_test, y_test), classes


def _file(path: str | None) -> Path:
    if not path:
        raise ConfigError(f"dataset.name='npz' needs dataset.path=FILE.npz, written by {_SAVE}")
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(f"dataset.path={path!r} does not exist; set it to a .npz file")
    if not file.is_file():  # a directory, or a FIFO a read would block on
        raise ConfigError(f"dataset.path={path!r} is not a regular file; set it to a .npz file")
    return file


def _read(file: Path) -> dict[str, np.ndarray]:
    """The four arrays of ``file``, read whole, or a one-line ConfigError."""
    try:
        npz = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        detail = " ".join(str(error).split())[:120]
        if "pickled" in detail:  # what np.load says of a file that is not a zip archive
            detail = "not an .npz archive"
        raise ConfigError(
            f"cannot read dataset.path={str(file)!r} as .npz ({detail}); write it with {_SAVE}"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ConfigError(
            f"dataset.path={str(file)!r} is a single .npy array; save the four with {_SAVE}"
        )
    with npz:
        missing = [key for key in ARRAYS if key not in npz.files]
        if missing:
            has = ", ".join(npz.files) or "no arrays"
            raise ConfigError(
                f"npz {file} has no array {', '.join(missing)} (it has {has}); "
                f"save the four with {_SAVE}"
            )
        return {key: _array(npz, key, file) for key in ARRAYS}


def _array(npz: np.lib.npyio.NpzFile, key: str, file: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError:  # the only ValueError here: object arrays, refused without pickle
        raise ConfigError(
            f"npz {key} in {file} holds Python objects; save it as a numeric array "
            f"({key}=np.asarray({key}, dtype=...))"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        message = f"npz {key} in {file} is damaged ({error}); write the file again"
        raise ConfigError(message) from None


def _examples(x: np.ndarray, key: str) -> np.ndarray:
    """``x`` as float32: uint8 divided by 255, floats as they are."""
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(
            f"npz {key} has shape {x.shape}; it must be (number of examples, ...) with at "
            "least one example and one feature (reshape a vector of scalars to (N, 1))"
        )
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= 255.0
        return out
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(
            f"npz {key} has dtype {x.dtype}; save it as float32 or as uint8 (read as /255)"
        )
    out = x.astype(np.float32)
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise ConfigError(
            f"npz {key} has {bad:,} NaN or infinite values (after conversion to float32); "
            "replace them (e.g. np.nan_to_num) or drop those examples"
        )
    return out


def _labels(y: np.ndarray, key: str) -> np.ndarray:
    if y.ndim != 1:
        raise ConfigError(
            f"npz {key} has shape {y.shape}; it must be one integer label per example, shape "
            "(N,) (for one-hot labels save y.argmax(axis=1))"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"npz {key} has dtype {y.dtype}; save integer class labels ({key}.astype(np.int32))"
        )
    if len(y) and int(y.min()) < 0:
        raise ConfigError(
            f"npz {key} has label {int(y.min())}; labels must be class indices 0, 1, ...; "
            "renumber the classes from 0"
        )
    if len(y) and int(y.max()) > np.iinfo(np.int32).max:
        raise ConfigError(f"npz {key} has label {int(y.max())}; labels must fit in int32")
    return y.astype(np.int32)


def _check_lengths(x: np.ndarray, y: np.ndarray, split: str) -> None:
    if len(x) != len(y):
        raise ConfigError(
            f"npz x_{split} has {len(x):,} examples and y_{split} {len(y):,} labels; "
            "save one label per example"
        )


def _num_classes(y_train: np.ndarray, y_test: np.ndarray, num_classes: int) -> int:
    largest = max(int(y_train.max()), int(y_test.max()))
    if num_classes < 0:
        raise ConfigError(
            f"dataset.num_classes={num_classes} must be >= 1 (or 0: the largest label + 1)"
        )
    if num_classes == 0:
        return largest + 1
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if int(y.max()) >= num_classes:
            raise ConfigError(
                f"npz {key} has label {int(y.max())}, out of range for dataset.num_classes="
                f"{num_classes}; set dataset.num_classes={largest + 1} or fix the labels"
            )
    return num_classes
