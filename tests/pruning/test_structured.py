"""Structured pruning: which units, how many, and every slice of a pruned unit masked.

Parameters are drawn directly from the models' shapes (``jax.eval_shape``) or written by
hand, so no network is initialised or run here: the tests take about a second.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lottery.config import ConfigError, ModelConfig
from lottery.models import build
from lottery.pruning import flatten, full_mask
from lottery.pruning.structured import alive_units, structured_prune, unit_groups

CIFAR = (32, 32, 3)


def random_params(name: str, shape: tuple[int, ...], width: int = 0, **cfg) -> dict:
    """Normal draws shaped like the parameters of model ``name`` (no initialisation)."""
    network = build(ModelConfig(name=name, width=width, **cfg), shape, 10)
    shapes, _ = jax.eval_shape(network.init, jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def dead_columns(kernel_mask: np.ndarray) -> set[int]:
    """Output units whose every weight is masked."""
    return set(np.flatnonzero(~kernel_mask.reshape(-1, kernel_mask.shape[-1]).any(axis=0)))


def lowest(scores: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(scores, kind="stable")[:k])


def test_mlp_layerwise_exact_counts_and_slices() -> None:
    params = random_params("mlp", (5,), hidden=[8, 6])
    mask = full_mask(params)
    new = structured_prune(params, mask, 0.25)

    assert alive_units(new) == {"fc1": 6, "fc2": 4}  # round(0.25 * 8) = 2, round(1.5) = 2
    gone1 = lowest(np.abs(params["fc1"]["kernel"]).sum(axis=0), 2)
    gone2 = lowest(np.abs(params["fc2"]["kernel"]).sum(axis=0), 2)
    assert dead_columns(new["fc1"]["kernel"]) == gone1
    assert dead_columns(new["fc2"]["kernel"]) == gone2
    assert set(np.flatnonzero(~new["fc1"]["bias"])) == gone1
    assert set(np.flatnonzero(~new["fc2"]["bias"])) == gone2
    # The next layer's input rows of a pruned unit, and nothing else.
    expected_fc2 = np.ones((8, 6), bool)
    expected_fc2[sorted(gone1), :] = False
    expected_fc2[:, sorted(gone2)] = False
    np.testing.assert_array_equal(new["fc2"]["kernel"], expected_fc2)
    expected_out = np.ones((6, 10), bool)
    expected_out[sorted(gone2), :] = False
    np.testing.assert_array_equal(new["out"]["kernel"], expected_out)  # classes all kept
    assert new["out"]["bias"].all() and new["fc1"]["kernel"].any(axis=1).all()
    assert "out" not in alive_units(new)
    # A new pytree of numpy bools; the input mask is untouched.
    assert all(isinstance(m, np.ndarray) and m.dtype == bool for m in jax.tree.leaves(new))
    assert all(m.all() for m in jax.tree.leaves(mask))

    # The next level counts from the units still alive: round(0.25 * 6) = 2, round(0.25 * 4) = 1.
    again = structured_prune(params, new, 0.25)
    assert alive_units(again) == {"fc1": 4, "fc2": 3}
    assert dead_columns(again["fc1"]["kernel"]) >= gone1


def tiny(fc1: np.ndarray, *more: np.ndarray) -> dict:
    """A hand-written MLP: kernels ``fc1, fc2, ...`` with zero biases, and a 2-class ``out``."""
    kernels = [np.asarray(k, np.float32) for k in (fc1, *more)]
    params = {
        f"fc{i}": {"kernel": k, "bias": np.zeros(k.shape[1], np.float32)}
        for i, k in enumerate(kernels, start=1)
    }
    params["out"] = {"kernel": np.ones((kernels[-1].shape[1], 2), np.float32), "bias": np.zeros(2)}
    return params


def test_l1_and_l2_rank_units_by_hand() -> None:
    # Unit 0 has weights (1, 1, 1, 1): L1 4, L2 2. Unit 1 has (3, 0, 0, 0): L1 3, L2 3.
    params = tiny(np.array([[1, 3], [1, 0], [1, 0], [1, 0]]))
    l1 = structured_prune(params, full_mask(params), 0.5, norm="l1")
    l2 = structured_prune(params, full_mask(params), 0.5, norm="l2")
    np.testing.assert_array_equal(l1["fc1"]["bias"], [True, False])
    np.testing.assert_array_equal(l2["fc1"]["bias"], [False, True])
    np.testing.assert_array_equal(l2["out"]["kernel"], [[False, False], [True, True]])


def test_ties_prune_the_lower_index_first() -> None:
    params = tiny(np.ones((3, 4)))
    new = structured_prune(params, full_mask(params), 0.5)
    np.testing.assert_array_equal(new["fc1"]["bias"], [False, False, True, True])


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_the_last_unit_of_a_group_is_never_pruned(scope: str) -> None:
    params = tiny(np.array([[1.0, 2.0]]), np.array([[5.0, 6.0], [7.0, 8.0]]))
    mask = structured_prune(params, full_mask(params), 0.9, scope=scope)  # round(1.8) = 2 asked
    assert alive_units(mask) == {"fc1": 1, "fc2": 1}
    assert alive_units(structured_prune(params, mask, 0.9, scope=scope)) == {"fc1": 1, "fc2": 1}


def test_global_ranks_scores_divided_by_their_group_mean() -> None:
    # fc1 norms 100..400 (mean 250): 0.4, 0.8, 1.2, 1.6. fc2 norms 0.5, 3, 3, 3.5 (mean 2.5):
    # 0.2, 1.2, 1.2, 1.4. Three of eight go: fc2's unit 0, then fc1's units 0 and 1. Raw
    # norms would take fc2's 0, 1 and 2 instead.
    params = tiny(np.array([[100.0, 200.0, 300.0, 400.0]]), np.diag([0.5, 3.0, 3.0, 3.5]))
    new = structured_prune(params, full_mask(params), 0.375, scope="global")
    np.testing.assert_array_equal(new["fc1"]["bias"], [False, False, True, True])
    np.testing.assert_array_equal(new["fc2"]["bias"], [False, True, True, True])
    layerwise = structured_prune(params, full_mask(params), 0.375)  # round(1.5) = 2 per layer
    assert alive_units(layerwise) == {"fc1": 2, "fc2": 2}


@pytest.mark.parametrize(
    ("name", "shape", "positions"), [("conv2", CIFAR, (16, 16)), ("mnist1d_cnn", (40,), (5,))]
)
def test_flattened_channels_mask_their_rows_at_every_position(
    name: str, shape: tuple, positions: tuple
) -> None:
    """A conv's output flattened into a dense layer: its channel c is row c of every position."""
    params = random_params(name, shape, width=4)
    last = "conv2" if name == "conv2" else "conv3"
    reader = "fc1" if name == "conv2" else "out"
    new = structured_prune(params, full_mask(params), 0.25)
    (dead,) = dead_columns(new[last]["kernel"])
    rows = new[reader]["kernel"].reshape(*positions, 4, -1)
    assert not rows[..., dead, :].any()
    # Every other channel's rows are alive at every position, but for the reader's own
    # pruned units (fc1's columns; ``out`` has none).
    kept = np.delete(rows, dead, axis=len(positions))
    np.testing.assert_array_equal(kept, np.broadcast_to(new[reader]["bias"], kept.shape))


def test_resnet20_residual_channels_are_pruned_together() -> None:
    params = random_params("resnet20", CIFAR, width=4)
    # Channel 1 is the stem's weakest but strong in block1_1's conv2: the stage-1 score sums
    # over all its producers. Each block's conv1 has its own weakest channel.
    params["stem_conv"]["kernel"][..., 1] *= 0.01
    params["block1_1"]["conv2"]["kernel"][..., 1] *= 100.0
    weakest = {"block1_1": 0, "block1_2": 2, "block1_3": 3}
    for block, channel in weakest.items():
        params[block]["conv1"]["kernel"][..., channel] *= 0.01

    groups = {group.name: group for group in unit_groups(params)}
    inner = {f"block{s}_{i}/conv1" for s in (1, 2, 3) for i in (1, 2, 3)}
    assert set(groups) == {"stage1", "stage2", "stage3"} | inner
    assert [groups[f"stage{s}"].size for s in (1, 2, 3)] == [4, 8, 16]

    new = flatten(structured_prune(params, full_mask(params), 0.25))
    stage1 = ["stem_conv", *(f"block1_{i}/conv2" for i in (1, 2, 3))]
    norms = sum(np.abs(flatten(params)[f"{layer}/kernel"]).sum(axis=(0, 1, 2)) for layer in stage1)
    (dead,) = lowest(norms, 1)
    assert dead != 1  # the stem alone would have chosen 1
    for layer, norm in [
        ("stem_conv", "stem_bn"),
        *((f"block1_{i}/conv2", f"block1_{i}/bn2") for i in (1, 2, 3)),
    ]:
        assert dead_columns(new[f"{layer}/kernel"]) == {dead}
        for leaf in ("scale", "bias"):
            assert set(np.flatnonzero(~new[f"{norm}/{leaf}"])) == {dead}
    for consumer in [
        "block1_1/conv1",
        "block1_2/conv1",
        "block2_1/conv1",
        "block2_1/shortcut_conv",
    ]:
        kernel = new[f"{consumer}/kernel"]
        assert set(np.flatnonzero(~kernel.any(axis=(0, 1, 3)))) == {dead}

    for block, channel in weakest.items():  # conv1 channels are chosen block by block
        assert dead_columns(new[f"{block}/conv1/kernel"]) == {channel}
        assert set(np.flatnonzero(~new[f"{block}/bn1/bias"])) == {channel}
        assert set(np.flatnonzero(~new[f"{block}/conv2/kernel"].any(axis=(0, 1, 3)))) == {channel}

    # Stage 2 (8 channels, 2 pruned) opens with the projection shortcut; stage 3 feeds ``out``.
    stage2 = dead_columns(new["block2_1/shortcut_conv/kernel"])
    assert len(stage2) == 2
    for i in (1, 2, 3):
        assert dead_columns(new[f"block2_{i}/conv2/kernel"]) == stage2
    assert set(np.flatnonzero(~new["block2_1/shortcut_bn/scale"])) == stage2
    stage3 = dead_columns(new["block3_3/conv2/kernel"])
    assert len(stage3) == 4
    assert set(np.flatnonzero(~new["out/kernel"].any(axis=1))) == stage3
    assert new["out/bias"].all()


def test_imagenet_resnet50_groups() -> None:
    """Bottlenecks: the stem is its own group (block1_1's shortcut projects it), conv1 and
    conv2 are inner groups, conv3 joins the stage's stream."""
    network = build(ModelConfig(name="resnet50", width=4), (64, 64, 3), 10)
    shapes, _ = jax.eval_shape(network.init, jax.random.key(0))
    groups = {group.name: group for group in unit_groups(shapes)}
    assert groups["stem"].consumers == (
        ("block1_1/conv1/kernel", 2),
        ("block1_1/shortcut_conv/kernel", 2),
    )
    assert {"block1_1/conv1", "block1_1/conv2", "stage4"} <= set(groups)
    assert ("block4_3/conv3/kernel", 3) in groups["stage4"].producers
    assert groups["stage4"].consumers[-1] == ("out/kernel", 0)
    assert len(groups) == 1 + 4 + 2 * 16


def test_bad_input_is_one_config_error_line() -> None:
    params = tiny(np.ones((3, 4)))
    for kwargs in [
        {"fraction": 1.0},
        {"fraction": 0.2, "scope": "x"},
        {"fraction": 0.2, "norm": "l3"},
    ]:
        with pytest.raises(ConfigError):
            structured_prune(params, full_mask(params), **kwargs)
    other = {"encoder": {"kernel": np.ones((3, 4))}, "out": {"kernel": np.ones((4, 2))}}
    with pytest.raises(ConfigError, match=r"structured pruning supports .*mlp.*resnet20"):
        unit_groups(other)
