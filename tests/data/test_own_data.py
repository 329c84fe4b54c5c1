"""A user's own data: ``dataset.name=npz dataset.path=FILE.npz`` and ``dataset.name=tfds:NAME``.

The npz file is written here with numpy, as a user would; tfds datasets not in the zoo come
through ``tfds.testing.mock_data`` (the real ``tfds.data_source`` call, examples made from the
dataset's own feature spec).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lottery import data, experiment
from lottery.config import ConfigError, DatasetConfig
from lottery.config.applicability import check_applicable

from conftest import make_config, run_cli, summaries

FEATURES, CLASSES = 12, 3


def arrays(seed: int = 0, n_train: int = 240, n_test: int = 60) -> dict[str, np.ndarray]:
    """A learnable 3-class problem: the label is which of three feature blocks is largest."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        y = x.reshape(n, CLASSES, -1).sum(axis=2).argmax(axis=1)
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(np.int64)
    return out


def write(path, **arrays_) -> str:
    np.savez(path, **arrays_)
    return str(path)


def npz_config(path: str, *extra: str, root=None):
    overrides = [
        "dataset.name=npz",
        f"dataset.path={path}",
        "dataset.validation_size=40",
        "train.batch_size=20",
        "train.steps=100it",
        "train.eval_every=50it",
        "pruning.levels=1",
        "progress=false",
        *extra,
    ]
    return overrides if root is None else make_config(overrides, root)


@pytest.mark.slow
def test_npz_runs_end_to_end(tmp_path):
    file = write(tmp_path / "mine.npz", **arrays())
    done = run_cli(npz_config(file, f"results_root={tmp_path / 'results'}"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = summaries(tmp_path / "results")
    assert sorted(found) == [(0, 0), (0, 1)]
    dense = found[(0, 0)]
    assert dense["test_accuracy"] > 0.6  # learnt, not chance (1/3)
    hashed = json.loads(next((tmp_path / "results").rglob("hashed.json")).read_text())
    dataset = data.load(DatasetConfig(name="npz", path=file, validation_size=40))
    assert hashed["dataset.name"] == "npz"
    assert hashed["data.fingerprint"] == data.fingerprint(dataset)
    assert next((tmp_path / "results").rglob("curve.csv")).read_text().count("\n") >= 3


def test_npz_hash_follows_the_data_not_the_path(tmp_path):
    first = write(tmp_path / "a.npz", **arrays())
    same = write(tmp_path / "b.npz", **arrays())
    changed = arrays()
    changed["x_test"][7, 3] += 1e-3  # one value of one test example
    other = write(tmp_path / "c.npz", **changed)
    plans = [experiment.prepare(npz_config(p, root=tmp_path)) for p in (first, same, other)]
    digests = [plan.digest for plan in plans]
    assert digests[0] == digests[1] != digests[2]


def test_npz_uint8_is_scaled_to_unit_interval_and_classes_counted(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0, 255
    y = np.arange(30) % 5
    file = write(tmp_path / "img.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    dataset = data.load(DatasetConfig(name="npz", path=file, validation_size=10, normalize=False))
    assert dataset.num_classes == 5 and dataset.input_shape == (4, 4, 1)
    assert dataset.train.x.dtype == np.float32 and dataset.train.y.dtype == np.int32
    np.testing.assert_array_equal(dataset.train.x, x[:20].astype(np.float32) / 255)
    np.testing.assert_array_equal(dataset.validation.y, y[20:])
    more = data.load(DatasetConfig(name="npz", path=file, validation_size=10, num_classes=7))
    assert more.num_classes == 7


def _with(**changes):
    def make(tmp_path):
        values = arrays()
        for key, value in changes.items():
            if value is None:
                del values[key]
            else:
                values[key] = value(values[key]) if callable(value) else value
        return write(tmp_path / "bad.npz", **values)

    return make


def _nan(x):
    x = x.copy()
    x[3, 2] = np.nan
    return x


def _fifo(tmp_path):
    import os

    os.mkfifo(tmp_path / "bad.npz")
    return str(tmp_path / "bad.npz")


def _text(tmp_path):
    (tmp_path / "bad.npz").write_text("not an archive")
    return str(tmp_path / "bad.npz")


def _npy(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros(3))
    return str(tmp_path / "bad.npy")


BAD = {
    # what: (file maker, words the one line must hold)
    "missing y_test": (_with(y_test=None), ["y_test", "np.savez"]),
    "x_train int16": (_with(x_train=lambda x: x.astype(np.int16)), ["x_train", "int16", "uint8"]),
    "x_train 1-D": (_with(x_train=lambda x: x[:, 0]), ["x_train", "(240,)"]),
    "x_test other shape": (_with(x_test=lambda x: x[:, :5]), ["x_test", "(5,)", "same shape"]),
    "NaN in x_train": (_with(x_train=_nan), ["x_train", "NaN", "nan_to_num"]),
    "float labels": (_with(y_train=lambda y: y.astype(np.float32)), ["y_train", "astype"]),
    "one-hot labels": (_with(y_test=lambda y: np.eye(3)[y].astype(int)), ["y_test", "argmax"]),
    "negative label": (_with(y_train=lambda y: y - 1), ["y_train", "-1", "from 0"]),
    "lengths differ": (_with(y_train=lambda y: y[:-1]), ["x_train", "240", "239"]),
    "object array": (_with(y_test=lambda y: y.astype(object)), ["y_test", "objects"]),
    "not an npz": (_text, ["bad.npz", "np.savez"]),
    "a .npy file": (_npy, ["bad.npy", ".npy"]),
    "a FIFO": (_fifo, ["bad.npz", "not a regular file"]),
    "a folder": (lambda tmp_path: str(tmp_path), ["not a regular file"]),
    "no path": (lambda tmp_path: None, ["dataset.path=FILE.npz"]),
    "missing file": (lambda tmp_path: str(tmp_path / "none.npz"), ["none.npz", "does not exist"]),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_npz_is_one_line(what, tmp_path):
    make, words = BAD[what]
    path = make(tmp_path)
    with pytest.raises(ConfigError) as error:
        data.load(DatasetConfig(name="npz", path=path, validation_size=40))
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_label_past_num_classes_is_one_line(tmp_path):
    file = write(tmp_path / "a.npz", **arrays())
    with pytest.raises(ConfigError, match=r"y_train has label 2.*dataset.num_classes=3"):
        data.load(DatasetConfig(name="npz", path=file, num_classes=2, validation_size=40))


def test_own_data_keys_rejected_elsewhere(tmp_path):
    for overrides, key in (
        (["dataset.num_classes=4"], "dataset.num_classes"),
        (["dataset.test_split=validation"], "dataset.test_split"),
        (["dataset.name=npz", "dataset.train_split='train[:10]'"], "dataset.train_split"),
    ):
        cfg = make_config(overrides, tmp_path)
        with pytest.raises(ConfigError, match=key):
            check_applicable(cfg, (40,))
    check_applicable(make_config(["dataset.name=npz", "dataset.num_classes=4"], tmp_path), (4,))
    tfds_split = ["dataset.name=tfds:svhn_cropped", "dataset.test_split=extra"]
    check_applicable(make_config(tfds_split, tmp_path), (32, 32, 3))


def test_augment_on_1d_npz_is_rejected(tmp_path):
    file = write(tmp_path / "a.npz", **arrays())
    with pytest.raises(ConfigError, match=r"dataset\.augment=true does not apply"):
        experiment.prepare(npz_config(file, "dataset.augment=true", root=tmp_path))


# --- tfds:NAME -------------------------------------------------------------------------------


def mock(num_examples: int):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def test_tfds_name_not_in_the_zoo(tmp_path):
    """svhn_cropped: shape and classes from the builder's info, the splits chosen by key."""
    with mock(30):
        dataset = data.load(
            DatasetConfig(
                name="tfds:svhn_cropped",
                path=str(tmp_path),
                validation_size=6,
                test_split="extra",
                normalize=False,
            )
        )
    assert dataset.num_classes == 10 and dataset.input_shape == (32, 32, 3)
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (24, 6, 30)
    assert dataset.train.x.dtype == np.float32 and dataset.train.x.min() >= 0
    assert dataset.train.x.max() <= 1 and dataset.test.y.max() < 10


def test_tfds_name_with_version_and_classes_from_info(tmp_path):
    with mock(20):
        dataset = data.load(DatasetConfig(name="tfds:cifar100:3.0.2", validation_size=4))
    assert dataset.num_classes == 100 and dataset.input_shape == (32, 32, 3)
    np.testing.assert_allclose(dataset.train.x.mean(axis=(0, 1, 2)), 0, atol=1e-5)  # normalised


@pytest.mark.parametrize(
    "name, words",
    [
        ("tfds:", ["tfds:NAME"]),
        ("tfds:no_such_dataset", ["no_such_dataset", "knows no such dataset"]),
        ("tfds:cifar100:9.9.9", ["9.9.9", "3.0.2"]),
        ("tfds:imdb_reviews", ["not an image classification dataset", "npz"]),
        ("tfds:imagenette", ["(None, None, 3)", "npz"]),
    ],
)
def test_bad_tfds_name_is_one_line(name, words, tmp_path):
    with pytest.raises(ConfigError) as error:
        data.load(DatasetConfig(name=name, path=str(tmp_path)))
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
