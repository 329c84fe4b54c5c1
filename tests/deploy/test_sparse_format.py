"""The sparse ticket format: exact round trips, smaller than dense, and never a torn file."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest

from lottery.deploy.sparse_format import dense_size, load_sparse, save_sparse
from lottery.pruning import apply_mask, flatten, full_mask, unflatten

SHAPES = {"fc1": (784, 300), "fc2": (300, 100), "out": (100, 10)}


def lenet_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: {
            "kernel": rng.normal(size=shape).astype(np.float32),
            "bias": rng.normal(size=shape[-1:]).astype(np.float32),
        }
        for name, shape in SHAPES.items()
    }


def kernel_mask(params, density, seed=0):
    """Kernels keep ``density`` of their entries, at random; biases stay whole."""
    rng = np.random.default_rng(seed)
    mask = full_mask(params)
    for name in SHAPES:
        kernel = mask[name]["kernel"]
        mask[name]["kernel"] = rng.random(kernel.shape) < density
    return mask


def bits(tree):
    """Every leaf's raw bytes, so -0.0 and +0.0 (or two NaNs) differ."""
    return {
        path: (leaf.dtype.str, leaf.shape, leaf.tobytes()) for path, leaf in flatten(tree).items()
    }


def encodings(path):
    with np.load(path) as arrays:
        header = json.loads(str(arrays["header"]))
    return {leaf["path"]: leaf["encoding"] for leaf in header["leaves"]}


@pytest.mark.parametrize(
    ("density", "kernel_encoding"),
    [
        (0.0, "gaps"),
        (0.01, "gaps"),
        (0.1, "gaps"),
        (0.5, "bitmap"),
        (0.999, "dense"),
        (1.0, "dense"),
    ],
)
def test_round_trip_is_bit_identical(tmp_path, density, kernel_encoding):
    params = lenet_params()
    params["fc1"]["kernel"][0, :4] = [-0.0, np.nan, np.inf, -np.inf]  # alive at any density
    mask = kernel_mask(params, density)
    mask["fc1"]["kernel"][0, :4] = True
    path = tmp_path / "ticket.npz"
    written = save_sparse(path, params, mask)
    assert written == path.stat().st_size
    expected = {p: np.asarray(v) for p, v in flatten(apply_mask(params, mask)).items()}
    assert bits(load_sparse(path)) == bits(unflatten(expected))
    chosen = encodings(path)
    assert chosen["fc2/kernel"] == kernel_encoding
    assert {chosen[f"{name}/bias"] for name in SHAPES} == {"dense"}


def test_pruned_entries_load_as_positive_zero_whatever_they_held(tmp_path):
    params = lenet_params()
    mask = kernel_mask(params, 0.1)
    save_sparse(tmp_path / "t.npz", params, mask)  # params not masked: dead entries nonzero
    loaded = load_sparse(tmp_path / "t.npz")
    dead = ~mask["fc1"]["kernel"]
    assert np.all(loaded["fc1"]["kernel"][dead] == 0)
    assert not np.signbit(loaded["fc1"]["kernel"][dead]).any()
    kept = mask["fc1"]["kernel"]
    assert np.array_equal(loaded["fc1"]["kernel"][kept], params["fc1"]["kernel"][kept])


def test_sparse_file_is_much_smaller_at_90_percent_sparsity(tmp_path):
    params = lenet_params()
    dense = dense_size(params)
    assert dense > 4 * 266_610  # float32 values, plus the npz's headers
    written = save_sparse(tmp_path / "t.npz", params, kernel_mask(params, 0.1))
    # 10% of the values (4 bytes each) and about a byte of gap for each: about 1/8 of dense.
    assert written < 0.16 * dense
    whole = save_sparse(tmp_path / "whole.npz", params, full_mask(params))
    assert written < 0.2 * whole


def test_bfloat16_values_survive_bit_for_bit(tmp_path):
    rng = np.random.default_rng(3)
    params = {"fc": {"kernel": rng.normal(size=(64, 32)).astype(ml_dtypes.bfloat16)}}
    mask = {"fc": {"kernel": rng.random((64, 32)) < 0.3}}
    save_sparse(tmp_path / "t.npz", params, mask)
    loaded = load_sparse(tmp_path / "t.npz")
    assert loaded["fc"]["kernel"].dtype == ml_dtypes.bfloat16
    assert bits(loaded) == bits(
        {"fc": {"kernel": np.where(mask["fc"]["kernel"], params["fc"]["kernel"], 0)}}
    )


def test_a_mask_of_another_shape_is_refused(tmp_path):
    params = lenet_params()
    mask = kernel_mask(params, 0.5)
    del mask["out"]["bias"]
    with pytest.raises(ValueError, match="leaves differ"):
        save_sparse(tmp_path / "t.npz", params, mask)
    mask = kernel_mask(params, 0.5)
    mask["out"]["kernel"] = mask["out"]["kernel"].T
    with pytest.raises(ValueError, match="out/kernel"):
        save_sparse(tmp_path / "t.npz", params, mask)
    assert not list(tmp_path.iterdir())


def test_another_npz_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", header=np.array(json.dumps({"format": "x"})))
    with pytest.raises(ValueError, match="not a lottery-sparse file"):
        load_sparse(tmp_path / "other.npz")


def test_an_error_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.npz"
    old = lenet_params(0)
    save_sparse(path, old, kernel_mask(old, 0.1))
    before = path.read_bytes()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    new = lenet_params(1)
    with pytest.raises(OSError, match="disk full"):
        save_sparse(path, new, kernel_mask(new, 0.1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # the temp file is cleaned up


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from lottery.deploy.sparse_format import save_sparse

def die(src, dst):  # the temp file is complete; die as SIGKILL would, before the rename
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = die
params = {"fc": {"kernel": np.arange(10_000, dtype=np.float32).reshape(100, 100)}}
save_sparse(sys.argv[1], params, {"fc": {"kernel": params["fc"]["kernel"] % 3 == 0}})
"""


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "t.npz"
    old = lenet_params(0)
    save_sparse(path, old, kernel_mask(old, 0.1))
    before = path.read_bytes()
    script = textwrap.dedent(KILLED_WRITER)
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and "t.npz" in left  # the temp file stayed, beside the old file
    assert path.read_bytes() == before
    assert bits(load_sparse(path)) == bits(apply_mask(old, kernel_mask(old, 0.1)))
    # The next save replaces the file despite the leftover.
    save_sparse(path, old, full_mask(old))
    assert bits(load_sparse(path)) == bits(old)
