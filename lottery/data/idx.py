"""MNIST-format IDX files (MNIST, Fashion-MNIST, ...) from a local directory."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from lottery.config.errors import ConfigError

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise ConfigError(f"cannot read {path} ({error}); check dataset.path") from None
    if len(raw) < 4 or raw[0] << 8 | raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(f"{path} is not an unsigned-byte IDX file; check dataset.path")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise ConfigError(
            f"{path} is truncated or damaged ({len(raw):,} bytes, its header says "
            f"{expected:,}); download or copy it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str, hint: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"missing IDX file {directory / stem}[.gz]; {hint}")


def load_idx(directory: str | None, hint: str) -> tuple[np.ndarray, ...]:
    """(train images, train labels, test images, test labels) from a directory of IDX files.

    Images come back as float32 in [0, 1], shaped (N, H, W, 1).
    """
    if not directory:
        raise ConfigError(f"dataset.path is not set; {hint}")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(f"IDX directory {root} does not exist; {hint}")
    arrays = {key: read_idx(_find(root, stem, hint)) for key, stem in _FILES.items()}
    images = {}
    for key in ("train_x", "test_x"):
        images[key] = arrays[key].astype(np.float32)[..., None]
        images[key] /= 255.0  # in place: no second copy of the dataset
    return (
        images["train_x"],
        arrays["train_y"].astype(np.int32),
        images["test_x"],
        arrays["test_y"].astype(np.int32),
    )
