"""MNIST-format IDX files: the real Fashion-MNIST from Debian, and a file we write ourselves."""

import gzip

import numpy as np
import pytest

from lottery import data
from lottery.config import ConfigError, DatasetConfig
from lottery.data.idx import read_idx


def test_reads_a_gzipped_idx_file_we_wrote(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), images)


def test_fashion_mnist_from_the_debian_package(fashion_mnist_dir):
    dataset = data.load(
        DatasetConfig(name="fashion_mnist_idx", path=str(fashion_mnist_dir), validation_size=5000)
    )
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (55000, 5000, 10000)
    assert dataset.input_shape == (28, 28, 1)
    assert dataset.train.x.dtype == np.float32 and dataset.train.y.dtype == np.int32
    assert abs(float(dataset.train.x.mean())) < 1e-3  # normalised with the train statistics
    assert np.bincount(dataset.test.y).tolist() == [1000] * 10


def test_a_directory_without_idx_files_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"missing IDX file .*train-images-idx3-ubyte"):
        data.load(DatasetConfig(name="idx", path=str(tmp_path)))
