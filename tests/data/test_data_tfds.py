"""tfds datasets (mock and real array_record files), the ImageNet grain pipeline, augmentation.

Nothing is downloaded: ``tfds.testing.mock_data`` fakes the examples behind the real
``tfds.data_source`` call, and a tiny CIFAR-10 is written as real array_record files (tfds can
write those without TensorFlow when handed PIL images) to test the real decoding path.
"""

from __future__ import annotations

import importlib.util
import itertools

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from lottery import data
from lottery.config import ConfigError, DatasetConfig
from lottery.data import prepare
from lottery.data.augment import crop_flip
from lottery.data.imagenet import imagenet_batches, random_resized_crop_box

SHAPES = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}


def mock(num_examples: int):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_mock_tfds_dataset_shapes(name, tmp_path):
    shape, num_classes = SHAPES[name]
    with mock(40):
        dataset = data.load(
            DatasetConfig(name=name, path=str(tmp_path), validation_size=8, normalize=False)
        )
    assert dataset.num_classes == num_classes
    assert dataset.input_shape == shape
    for split, size in ((dataset.train, 32), (dataset.validation, 8), (dataset.test, 40)):
        assert split.x.shape == (size, *shape) and split.x.dtype == np.float32
        assert split.y.shape == (size,) and split.y.dtype == np.int32
        assert split.x.min() >= 0 and split.x.max() <= 1 and split.x.max() > 0.5
        assert split.y.min() >= 0 and split.y.max() < num_classes


def test_mock_tfds_normalized():
    with mock(20):
        dataset = data.load(DatasetConfig(name="cifar10", path=None, validation_size=4))
    np.testing.assert_allclose(dataset.train.x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(dataset.train.x.std(axis=(0, 1, 2)), 1, atol=1e-4)


def _fake_image(i: int) -> np.ndarray:
    image = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image[0, 0, 0] = i  # identifies the example: tfds shuffles the order it writes
    return image


def write_tiny_cifar10(tmp_path) -> None:
    """30 train and 12 test examples of CIFAR-10, as real array_record files in ``tmp_path``."""
    from tensorflow_datasets.core import registered
    from tensorflow_datasets.image_classification import cifar

    sizes = {"train": 30, "test": 12}

    with registered.skip_registration():

        class TinyCifar10(cifar.Cifar10):
            name = "cifar10"

            def _split_generators(self, dl_manager):
                return {split: self._examples(n) for split, n in sizes.items()}

            def _examples(self, n):
                for i in range(n):
                    image = Image.fromarray(_fake_image(i))
                    yield i, {"id": f"{i}", "image": image, "label": i % 10}

    TinyCifar10(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()


def test_real_array_record_files(tmp_path):
    """The real read path (array_record + numpy parser + PIL decode) on files tfds wrote."""
    write_tiny_cifar10(tmp_path)
    dataset = data.load(
        DatasetConfig(name="cifar10", path=str(tmp_path), validation_size=5, normalize=False)
    )
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (25, 5, 12)
    for x, y, n in (
        (np.concatenate([dataset.train.x, dataset.validation.x]), dataset.train.y, 30),
        (dataset.test.x, dataset.test.y, 12),
    ):
        index = np.rint(x[:, 0, 0, 0] * 255).astype(int)
        assert sorted(index) == list(range(n))
        expected = np.stack([_fake_image(i) for i in index]).astype(np.float32) / 255
        np.testing.assert_array_equal(x, expected)
        np.testing.assert_array_equal(y, index[: len(y)] % 10)


def test_tfds_name_reads_the_same_files_and_checks_split_names(tmp_path):
    """``tfds:cifar10`` reads what ``cifar10`` reads, its info and splits from the prepared
    files; a split the files do not have is one line listing those they have."""
    write_tiny_cifar10(tmp_path)
    zoo = data.load(DatasetConfig(name="cifar10", path=str(tmp_path), validation_size=5))
    own = data.load(DatasetConfig(name="tfds:cifar10", path=str(tmp_path), validation_size=5))
    assert own.num_classes == zoo.num_classes == 10
    for ours, theirs in zip(
        (own.train, own.validation, own.test), (zoo.train, zoo.validation, zoo.test), strict=True
    ):
        np.testing.assert_array_equal(ours.x, theirs.x)
        np.testing.assert_array_equal(ours.y, theirs.y)
    half = data.load(
        DatasetConfig(
            name="tfds:cifar10", path=str(tmp_path), validation_size=0, test_split="train[:10]"
        )
    )
    np.testing.assert_array_equal(half.test.y, zoo.train.y[:10])
    with pytest.raises(ConfigError) as error:
        data.load(DatasetConfig(name="tfds:cifar10", path=str(tmp_path), test_split="tset"))
    message = str(error.value)
    assert "\n" not in message and "dataset.test_split='tset'" in message
    assert "train, test" in message


def test_missing_dataset_is_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        data.load(DatasetConfig(name="cifar10", path=str(tmp_path)))
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "lottery.data.prepare cifar10" in message


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TF installed")
def test_prepare_without_tensorflow_is_one_line_error(tmp_path, capsys):
    assert prepare.main(["cifar10", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensorflow" in err and "lottery[prepare]" in err


# --- augmentation ----------------------------------------------------------------------------


def _matches(out: np.ndarray, image: np.ndarray, pad: int) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, flip) whose crop of the zero-padded ``image`` equals ``out``."""
    h, w, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    found = []
    for dy, dx, flip in itertools.product(range(2 * pad + 1), range(2 * pad + 1), (0, 1)):
        crop = padded[dy : dy + h, dx : dx + w]
        if np.array_equal(out, crop[:, ::-1] if flip else crop):
            found.append((dy, dx, bool(flip)))
    return found


def test_crop_flip_is_a_shifted_maybe_flipped_copy():
    images = np.random.default_rng(0).normal(size=(6, 8, 10, 3)).astype(np.float32)
    out = np.asarray(crop_flip(jax.random.key(0), images))
    assert out.shape == images.shape and out.dtype == np.float32
    for o, image in zip(out, images, strict=True):
        assert len(_matches(o, image, 4)) == 1


def test_crop_flip_randomness_per_key_and_per_example():
    image = np.random.default_rng(1).normal(size=(8, 8, 3)).astype(np.float32)
    batch = np.repeat(image[None], 256, axis=0)
    out_a = np.asarray(crop_flip(jax.random.key(1), batch))
    out_b = np.asarray(crop_flip(jax.random.key(2), batch))
    assert not np.array_equal(out_a, out_b)
    draws = [_matches(o, image, 4)[0] for o in out_a]  # identical inputs, different crops
    assert len(set(draws)) > 50
    assert {d[0] for d in draws} == set(range(9)) == {d[1] for d in draws}
    assert 0.35 < np.mean([d[2] for d in draws]) < 0.65


def test_crop_flip_inside_jit_scan_matches_eager():
    images = np.random.default_rng(2).normal(size=(4, 8, 8, 3)).astype(np.float32)
    key = jax.random.key(3)

    @jax.jit
    def run(images, key):
        def step(carry, i):
            return carry, crop_flip(jax.random.fold_in(key, i), images)

        return jax.lax.scan(step, 0, np.arange(3))[1]

    scanned = np.asarray(run(images, key))
    for i in range(3):
        eager = np.asarray(crop_flip(jax.random.fold_in(key, i), images))
        np.testing.assert_array_equal(scanned[i], eager)


# --- ImageNet through grain ------------------------------------------------------------------


def test_imagenet_batches_under_mock_data():
    with mock(10):
        train = list(
            itertools.islice(imagenet_batches(None, "train", 4, 0, True, num_threads=2), 3)
        )
        again = next(imagenet_batches(None, "train", 4, 0, True, num_threads=2))
        evaluation = list(imagenet_batches(None, "validation", 4, 0, False, num_threads=2))
    for images, labels in train:
        assert images.shape == (4, 224, 224, 3) and images.dtype == np.float32
        assert labels.shape == (4,) and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < 1000
        assert np.isfinite(images).all() and images.min() > -2.2 and images.max() < 2.7
    np.testing.assert_array_equal(again[0], train[0][0])  # deterministic given the seed
    assert [len(labels) for _, labels in evaluation] == [4, 4, 2]  # one pass, last partial
    assert all(images.shape[1:] == (224, 224, 3) for images, _ in evaluation)


def test_each_process_reads_its_rows_of_the_same_imagenet_batches():
    """Two processes' rows of batches 2 and 3 (from a start at step 2, after an epoch of 10
    examples: reshuffled), joined, are the batches one process reads whole."""
    with mock(10):
        whole = list(itertools.islice(
            imagenet_batches(None, "train", 4, 0, True, first_step=2, num_threads=2), 2))
        rows = [list(itertools.islice(imagenet_batches(
            None, "train", 4, 0, True, first_step=2, num_threads=2, process=(p, 2)), 2))
            for p in range(2)]
    for step, (images, labels) in enumerate(whole):
        (first, first_labels), (second, second_labels) = rows[0][step], rows[1][step]
        assert first.shape == (2, 224, 224, 3)
        np.testing.assert_array_equal(np.concatenate([first, second]), images)
        np.testing.assert_array_equal(np.concatenate([first_labels, second_labels]), labels)


def test_imagenet_missing_is_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        imagenet_batches(str(tmp_path), "train", 4, 0, True)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and "lottery.data.prepare" in message


def test_random_resized_crop_box_inside_image():
    rng = np.random.default_rng(0)
    for height, width in ((375, 500), (500, 333), (40, 400), (17, 3)):
        for _ in range(50):
            top, left, h, w = random_resized_crop_box(rng, height, width)
            assert top >= 0 and top + h <= height and h > 0
            assert left >= 0 and left + w <= width and w > 0
