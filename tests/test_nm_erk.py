"""``pruning.method=nm`` (N:M sparsity along each kernel's input dimension) against a hand
computation and end to end on digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lottery.config import ConfigError
from lottery.pruning.methods.nm import check, nm_mask, settings
from lottery.pruning.strategies import strategy_for

from conftest import DIGITS, make_config, run_cli


def hand_nm(kernel: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M by loops: for each output unit (and kernel position), each run of ``m`` inputs
    keeps the ``n`` of largest |w|."""
    flat = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])  # (positions, in, out)
    keep = np.zeros(flat.shape, dtype=bool)
    for position in range(flat.shape[0]):
        for out in range(flat.shape[2]):
            for start in range(0, flat.shape[1], m):
                group = [abs(float(flat[position, i, out])) for i in range(start, start + m)]
                largest = sorted(range(m), key=lambda i: -group[i])[:n]
                for i in largest:
                    keep[position, start + i, out] = True
    return keep.reshape(kernel.shape)


@pytest.mark.parametrize(
    ("shape", "n", "m"),
    [((8, 3), 2, 4), ((16, 5), 1, 4), ((3, 3, 8, 6), 2, 4), ((2, 2, 16, 3), 3, 8)],
)
def test_nm_keeps_the_n_largest_of_every_group_of_m_inputs(shape, n, m):
    kernel = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    mask = nm_mask(kernel, n, m)
    assert mask.shape == kernel.shape
    np.testing.assert_array_equal(mask, hand_nm(kernel, n, m))
    groups = np.moveaxis(mask, -2, -1).reshape(-1, m)  # each row one group of m inputs
    assert (groups.sum(axis=1) == n).all()


def test_nm_settings_and_layers_are_checked():
    with pytest.raises(ConfigError, match=r"pruning.levels=10 does not apply"):
        settings(make_config(["pruning.method=nm"]).pruning, None)
    with pytest.raises(ConfigError, match=r"1 <= nm_n < nm_m"):
        settings(make_config(["pruning.method=nm", "pruning.levels=1", "pruning.nm_n=4"]).pruning,
                 None)
    s = settings(make_config(["pruning.method=nm", "pruning.levels=1"]).pruning, None)
    assert (s.n, s.m) == (2, 4)
    params = {"fc1": {"kernel": np.zeros((64, 30))}, "out": {"kernel": np.zeros((30, 10))}}
    with pytest.raises(ConfigError, match=r"out/kernel has 30 inputs.*pruning.prunable"):
        check(params, ["fc1/kernel", "out/kernel"], s)
    check(params, ["fc1/kernel"], s)  # the layer left dense: accepted
    with pytest.raises(ConfigError, match=r"does not apply to pruning.method='magnitude'"):
        strategy_for(make_config(["pruning.nm_m=8"]).pruning)


def test_nm_on_digits_end_to_end(tmp_path: Path):
    done = run_cli(
        [*DIGITS, "pruning.method=nm", "pruning.levels=1", "results_root=results"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    (dense,) = (tmp_path / "results").rglob("dense_*/replicate_0/level_0/params.npz")
    (level,) = (tmp_path / "results").rglob("level_1/mask.npz")
    weights, mask = np.load(dense), np.load(level)
    for layer in ("fc1", "fc2", "out"):  # inputs 64, 64, 32: all multiples of 4
        kernel = weights[f"params/{layer}/kernel"]
        np.testing.assert_array_equal(mask[f"mask/{layer}/kernel"], hand_nm(kernel, 2, 4))
        assert mask[f"mask/{layer}/bias"].all()
