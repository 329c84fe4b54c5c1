"""Datasets made on this machine, never downloaded: MNIST-1D and scikit-learn's digits."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from lottery.atomic import atomic_write_npz

DEFAULT_CACHE = Path(os.environ.get("LOTTERY_CACHE", "~/.cache/lottery")).expanduser()


def mnist1d(cache_dir: str | None = None) -> tuple[np.ndarray, ...]:
    """MNIST-1D (Greydanus & Kobak) made with the package's defaults: 4,000 train, 1,000 test.

    ``make_dataset`` takes a few seconds and reseeds numpy's global RNG, so the result is
    cached on disk and the global RNG state is put back as it was.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.pop("url")
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE / "mnist1d"
    file = cache / f"mnist1d_{digest}.npz"
    if not file.exists():
        state = np.random.get_state()
        try:
            data = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(state)
        atomic_write_npz(
            file,
            {"x": data["x"], "y": data["y"], "x_test": data["x_test"], "y_test": data["y_test"]},
        )
    with np.load(file) as data:
        return (
            data["x"].astype(np.float32),
            data["y"].astype(np.int32),
            data["x_test"].astype(np.float32),
            data["y_test"].astype(np.int32),
        )


def digits(test_size: int = 297) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package), as (N, 8, 8, 1).

    The last ``test_size`` images are the test split; the order is the package's own.
    """
    images, target = _digits_file()
    x = (images.astype(np.float32) / 16.0)[..., None]
    y = target.astype(np.int32)
    cut = len(y) - test_size
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _digits_file() -> tuple[np.ndarray, np.ndarray]:
    """The digits' images (N, 8, 8) and labels as ``sklearn.datasets.load_digits`` gives
    them, read as it reads them (``np.loadtxt`` of the ``digits.csv.gz`` scikit-learn ships)
    but without importing scikit-learn, whose import takes about a second: on every run of
    the package's quickest dataset. Where the file is not where scikit-learn keeps it, from
    ``load_digits`` itself."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec and spec.submodule_search_locations) or ():
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as file:
                data = np.loadtxt(file, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target
