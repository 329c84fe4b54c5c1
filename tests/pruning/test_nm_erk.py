"""``pruning.method=nm`` (N:M sparsity along each kernel's input dimension) and
``pruning.distribution=erk`` (Erdős–Rényi-Kernel per-layer densities for random and the
at-initialisation methods), each against a hand computation and end to end on digits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lottery.config import ConfigError
from lottery.pruning.at_init import prune_at_init
from lottery.pruning.erk import erk_densities, erk_keeps
from lottery.pruning.mask import flatten, full_mask
from lottery.pruning.methods.nm import check, nm_mask, settings
from lottery.pruning.strategies import strategy_for
from lottery.store.hashing import hashed_values

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
    with pytest.raises(ConfigError, match=r"pruning.levels=10 does not fit"):
        settings(make_config(["pruning.method=nm"]).pruning, None)
    with pytest.raises(ConfigError, match=r"pruning.levels=3 does not fit .* choose 1"):
        settings(make_config(["pruning.method=nm", "pruning.levels=3"]).pruning, None)
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


@pytest.mark.slow
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



@pytest.mark.slow
def test_nm_gradually_over_levels(tmp_path: Path):
    """2:4 in two levels: level 1 keeps 3 of every 4 by level 0's trained weights, level 2 2
    of every 4 among those by level 1's trained weights (by hand; its pruned ones are 0.0)."""
    done = run_cli(
        [*DIGITS, "pruning.method=nm", "pruning.levels=2", "results_root=results"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    (replicate,) = (tmp_path / "results").rglob("replicate_0/level_1")
    (dense,) = (tmp_path / "results").rglob("dense_*/replicate_0/level_0/params.npz")
    first, second = (np.load(replicate.parent / f"level_{n}/mask.npz") for n in (1, 2))
    trained_1 = np.load(replicate / "params.npz")
    for layer in ("fc1", "fc2", "out"):
        kernel = np.load(dense)[f"params/{layer}/kernel"]
        mask_1 = first[f"mask/{layer}/kernel"]
        np.testing.assert_array_equal(mask_1, hand_nm(kernel, 3, 4))
        ranked = np.where(mask_1, trained_1[f"params/{layer}/kernel"], 0.0)  # pruned: last
        np.testing.assert_array_equal(second[f"mask/{layer}/kernel"], hand_nm(ranked, 2, 4))


# -- pruning.distribution=erk ---------------------------------------------------------------

MLP = {"fc1/kernel": (64, 64), "fc2/kernel": (64, 32), "out/kernel": (32, 10)}  # digits' kernels


def test_erk_densities_are_the_erdos_renyi_kernel_rule():
    # Raw densities (Σ dims)/(Π dims): 128/4096, 96/2048, 42/320; Σ raw·n = 128 + 96 + 42 = 266.
    # Density 0.2: kept Σ (n − ⌊0.8 n⌋) = 820 + 410 + 64 = 1294, so ε = 1294 / 266.
    eps = 1294 / 266
    expected = {"fc1/kernel": eps * 128 / 4096, "fc2/kernel": eps * 96 / 2048,
                "out/kernel": eps * 42 / 320}
    assert erk_densities(MLP, 0.2) == pytest.approx(expected, rel=1e-12)
    # Density 0.5: ε = 3232 / 266 would give out 1.59 > 1, so out is dense and ε is solved
    # again for the others: (2048 + 1024 − ⌊0.5·320⌋) / (128 + 96) = 2912 / 224 = 13.
    expected = {"fc1/kernel": 13 * 128 / 4096, "fc2/kernel": 13 * 96 / 2048, "out/kernel": 1.0}
    assert erk_densities(MLP, 0.5) == pytest.approx(expected, rel=1e-12)
    assert erk_densities(MLP, 1.0) == {path: 1.0 for path in MLP}


@pytest.mark.parametrize("density", [0.02, 0.2, 0.5, 0.9])
def test_erk_keeps_the_target_within_the_rounding_of_the_layers(density):
    total = sum(math.prod(shape) for shape in MLP.values())
    keep = round(density * total)
    keeps = erk_keeps(MLP, keep)
    densities = erk_densities(MLP, keep / total)
    for path, shape in MLP.items():
        assert keeps[path] == math.floor(densities[path] * math.prod(shape) + 0.5)
    assert abs(sum(keeps.values()) - keep) <= len(MLP)


def test_erk_at_init_keeps_each_layers_count_of_its_highest_scores():
    rng = np.random.default_rng(1)
    params = {path.split("/")[0]: {"kernel": rng.normal(size=shape).astype(np.float32),
                                   "bias": np.ones(shape[1], np.float32)}
              for path, shape in MLP.items()}
    prunable = sorted(MLP)
    keep = 1293
    mask = prune_at_init(
        "magnitude_init", None, params, {}, full_mask(params), prunable, [], None, keep,
        distribution="erk",
    )
    flat_mask, flat_params = flatten(mask), flatten(params)
    for path, count in erk_keeps(MLP, keep).items():
        kernel = np.abs(flat_params[path]).ravel()
        largest = np.sort(np.argsort(-kernel, kind="stable")[:count])
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(flat_mask[path])), largest)
    assert all(np.asarray(flat_mask[f"{layer}/bias"]).all() for layer in ("fc1", "fc2", "out"))


def test_erk_config_is_checked_and_hashed():
    with pytest.raises(ConfigError, match=r"unknown pruning\.distribution 'erd'"):
        strategy_for(make_config(["pruning.method=random", "pruning.distribution=erd"]).pruning)
    with pytest.raises(ConfigError, match=r"does not apply to pruning.method='magnitude'"):
        strategy_for(make_config(["pruning.distribution=erk"]).pruning)
    for method in ("random", "snip", "grasp", "synflow", "magnitude_init"):
        cfg = make_config([f"pruning.method={method}", "pruning.distribution=erk"])
        assert strategy_for(cfg.pruning)[1].distribution == "erk"
    assert hashed_values(cfg)["pruning.distribution"] == "erk"
    assert "pruning.distribution" not in hashed_values(make_config(["pruning.method=random"]))


@pytest.mark.parametrize(
    ("method", "levels"),
    [(["pruning.method=random"], 2),  # SynFlow: each layer on its own schedule, over rounds
     (["pruning.method=synflow", "pruning.synflow_rounds=5", "pruning.levels=1"], 1)],
)
@pytest.mark.slow
def test_erk_on_digits_end_to_end(tmp_path: Path, method: list[str], levels: int):
    done = run_cli(
        [*DIGITS, *method, "pruning.distribution=erk", "results_root=results"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    total = sum(math.prod(shape) for shape in MLP.values())
    alive = total
    for level in range(1, levels + 1):  # IMP's count of the level, spread by ERK
        alive -= round(0.2 * alive)
        (found,) = (tmp_path / "results").rglob(f"level_{level}/mask.npz")
        mask = np.load(found)
        kept = {path: int(mask[f"mask/{path}"].sum()) for path in MLP}
        assert kept == erk_keeps(MLP, alive)
        assert kept["out/kernel"] / 320 > kept["fc1/kernel"] / 4096  # small layers denser
