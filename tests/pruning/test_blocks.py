"""``pruning.method=blocks``: whole identity-shortcut blocks by their last BatchNorm scale's
L1 norm, exact counts per level, and a compacted network that is shallower (the blocks are
gone from the module) with the masked network's logits."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_compact import CIFAR, logits, random_network

from lottery.config import ConfigError, PruningConfig
from lottery.deploy import compact, parameter_count
from lottery.experiment import run as run_experiment
from lottery.pruning import apply_mask, flatten, full_mask
from lottery.pruning.strategies import strategy_for
from lottery.pruning.structured import block_prune, removable_blocks, structured_prune

from conftest import cases, make_config, summaries


def dead_blocks(mask) -> set[str]:
    """Blocks every leaf of which is masked."""
    alive: dict[str, bool] = {}
    for path, m in flatten(mask).items():
        block = path.split("/", 1)[0]
        alive[block] = alive.get(block, False) or bool(np.any(m))
    return {block for block, any_alive in alive.items() if not any_alive}


def test_resnet20_blocks_by_their_last_batchnorm_scale() -> None:
    _, params, _ = random_network("resnet20", CIFAR, width=4)
    # block1_1 keeps 16 channels at stride 1: an identity shortcut; stages 2 and 3 open with
    # a projection.
    assert list(removable_blocks(params)) == ["block1_1", "block1_2", "block1_3"] + [
        f"block{s}_{i}" for s in (2, 3) for i in (2, 3)
    ]
    assert removable_blocks(params)["block2_2"] == "block2_2/bn2"
    order = ["block2_3", "block1_2", "block3_3", "block1_1", "block3_2", "block1_3", "block2_2"]
    for rank, block in enumerate(order):  # L1 norms 1, 2, ..., 7 (signs do not count)
        scale = np.zeros_like(params[block]["bn2"]["scale"])
        scale[0] = -(rank + 1.0)
        params[block]["bn2"]["scale"] = scale
    mask = block_prune(params, full_mask(params), 0.5)  # round half up: 0.5 * 7 -> 4
    assert dead_blocks(mask) == set(order[:4])
    mask = block_prune(params, mask, 0.5)  # 0.5 * 3 -> 2 more
    assert dead_blocks(mask) == set(order[:6])
    for path, m in flatten(mask).items():  # nothing else is touched
        assert m.all() == (path.split("/", 1)[0] not in order[:6])


def test_resnet56_exact_counts_per_level() -> None:
    _, params, _ = random_network("resnet56", CIFAR, width=2)
    assert len(removable_blocks(params)) == 25  # 3 stages x 9, less two projections
    mask = full_mask(params)
    for expected in (5, 5 + 4, 5 + 4 + 3, 5 + 4 + 3 + 3):  # 0.2 x 25, 20, 16, 13, rounded
        mask = block_prune(params, mask, 0.2)
        assert len(dead_blocks(mask)) == expected


def test_mobilenetv2_removes_the_repeated_blocks_only() -> None:
    _, params, _ = random_network("mobilenetv2_cifar", (8, 8, 3), width=8)
    blocks = removable_blocks(params)
    # (t, c, n, s) rows with n = 1, 2, 3, 4, 3, 3, 1 blocks: a stage's first has no shortcut.
    assert len(blocks) == 0 + 1 + 2 + 3 + 2 + 2 + 0
    assert blocks["block4_4"] == "block4_4/project_bn"
    assert "block4_1" not in blocks and "block1_1" not in blocks


CASES = [
    ("resnet20", CIFAR, {"width": 4}),
    ("resnet18", CIFAR, {"width": 4}),  # ImageNet's basic blocks
    ("mobilenetv2_cifar", (8, 8, 3), {"width": 8}),
]


@pytest.mark.parametrize(("name", "shape", "cfg"), cases(CASES, {"mobilenetv2_cifar"}))
def test_block_pruned_network_compacts_shallower(name: str, shape: tuple, cfg: dict) -> None:
    network, params, stats = random_network(name, shape, **cfg)
    mask = block_prune(params, full_mask(params), 0.5)
    mask = structured_prune(params, mask, 0.25)  # blocks and channels together
    gone = dead_blocks(mask)
    assert gone
    small, small_params, small_stats = compact(network, params, stats, mask)

    assert set(small.module.removed) == gone
    assert not gone & set(small_params) and not gone & set(small_stats)
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    expected = logits(network, apply_mask(params, mask), stats, x)
    got = logits(small, small_params, small_stats, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    alive = sum(int(np.count_nonzero(m)) for m in jax.tree.leaves(mask))
    assert parameter_count(small_params) == alive < parameter_count(params)


def test_networks_without_identity_blocks_are_one_line() -> None:
    _, params, _ = random_network("mlp", (5,), hidden=[8, 6])
    with pytest.raises(ConfigError, match=r"pruning\.method=blocks removes residual blocks"):
        block_prune(params, full_mask(params), 0.2)
    strategy, settings = strategy_for(PruningConfig(method="blocks", scope="global"))
    assert strategy.compactable
    with pytest.raises(ConfigError, match="has none"):
        strategy.check(params, [], settings)
    with pytest.raises(ConfigError, match=r"pruning\.scope"):  # a key blocks does not read
        strategy_for(PruningConfig(method="blocks", scope="layerwise"))


@pytest.mark.slow
def test_blocks_method_runs_and_compacts_on_mock_cifar(tmp_path) -> None:
    cfg = make_config(
        ["dataset=cifar10", "model=resnet20", "model.width=4", "pruning.method=blocks",
         "pruning.fraction=0.5", "pruning.levels=1", "train.steps=4it", "train.batch_size=4",
         "train.eval_every=2it", "train.eval_batch_size=8", "dataset.validation_size=8",
         "progress=false", f"dataset.path={tmp_path / 'tfds'}"], tmp_path)
    with tfds.testing.mock_data(num_examples=40):
        run_experiment(cfg)
    level = summaries(tmp_path)[(0, 1)]
    assert level["compacted"]["params"] < level["compacted"]["dense"]["params"]
    assert level["flops"] < level["dense_flops"]
