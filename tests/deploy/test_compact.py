"""Compaction: the smaller network computes the masked network's logits, and is smaller.

Variables are random draws shaped like the models' (biases, BatchNorm scales, shifts and
statistics included, so that a pruned unit left half alive would show in the logits), at
widths of 4 to 8; each forward pass is jitted once.
"""

from __future__ import annotations

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lottery.config import ConfigError, ModelConfig
from lottery.deploy import compact, inference_latency, parameter_count, size_on_disk
from lottery.models import Network, build
from lottery.pruning import apply_mask, flatten, full_mask
from lottery.pruning.structured import alive_units, structured_prune, unit_groups

from conftest import cases

CIFAR = (32, 32, 3)


def random_network(name: str, shape: tuple[int, ...], **cfg) -> tuple[Network, dict, dict]:
    """Model ``name`` with random parameters and BatchNorm statistics of moderate scale."""
    network = build(ModelConfig(name=name, **cfg), shape, 10)
    params, stats = jax.eval_shape(network.init, jax.random.key(0))
    rng = np.random.default_rng(0)

    def draw(path, leaf) -> np.ndarray:
        name, size = path[-1].key, leaf.shape
        if name == "kernel":
            fan_in = int(np.prod(size[:-1]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), size).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, size).astype(np.float32)
        return rng.normal(0.0, 0.2, size).astype(np.float32)  # biases, shifts, means

    params = jax.tree_util.tree_map_with_path(draw, params)
    stats = jax.tree_util.tree_map_with_path(draw, stats)
    return network, params, stats


def logits(network: Network, params: dict, stats: dict, x: jax.Array) -> np.ndarray:
    return np.asarray(jax.jit(lambda p, s: network.apply(p, s, x, train=False)[0])(params, stats))


CASES = [
    ("mlp", (5,), {"hidden": [8, 6]}),
    ("conv2", CIFAR, {"width": 4}),
    ("resnet20", CIFAR, {"width": 4}),
    ("mnist1d_cnn", (40,), {"width": 6}),
    ("vgg11", CIFAR, {"width": 4}),
    ("resnet50", CIFAR, {"width": 4}),  # bottlenecks; the stem is a group of its own
    # inverted residuals: expansion groups with their depthwise filters, residual streams
    ("mobilenetv2_cifar", (8, 8, 3), {"width": 8}),
]


# The largest networks run in the whole suite only.
SLOW = {"mobilenetv2_cifar", "resnet50"}


@pytest.mark.parametrize(("name", "shape", "cfg"), cases(CASES, SLOW))
def test_compacted_network_equals_the_masked_one(name: str, shape: tuple, cfg: dict) -> None:
    network, params, stats = random_network(name, shape, **cfg)
    mask = structured_prune(params, full_mask(params), 0.5)
    mask = structured_prune(params, mask, 0.3, scope="global", norm="l2")
    small, small_params, small_stats = compact(network, params, stats, mask)

    x = jax.random.normal(jax.random.key(1), (3, *shape))
    expected = logits(network, apply_mask(params, mask), stats, x)
    got = logits(small, small_params, small_stats, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())

    # Exactly the surviving entries: a structured mask keeps all of an alive unit's weights.
    alive = sum(int(np.count_nonzero(m)) for m in jax.tree.leaves(mask))
    assert parameter_count(small_params) == alive < parameter_count(params)
    # Physically smaller: every producer kernel has as many output channels as units alive.
    flat = flatten(small_params)
    for group in unit_groups(params):
        for path, _ in group.kernels:
            assert flat[path].shape[-1] == alive_units(mask)[group.name] < group.size
    assert flat["out/kernel"].shape[-1] == 10
    assert jax.tree.structure(small_stats) == jax.tree.structure(stats)


def test_zeros_inside_kept_units_are_kept() -> None:
    """What is counted: removed units' slices go; a weight masked alone in a kept unit stays."""
    network, params, stats = random_network("mlp", (5,), hidden=[8, 6])
    mask = structured_prune(params, full_mask(params), 0.5)
    alive = sum(int(np.count_nonzero(m)) for m in jax.tree.leaves(mask))
    row, column = np.argwhere(mask["fc2"]["kernel"])[0]
    mask["fc2"]["kernel"][row, column] = False
    _, small_params, _ = compact(network, params, stats, mask)
    assert parameter_count(small_params) == alive
    assert np.count_nonzero(np.asarray(small_params["fc2"]["kernel"]) == 0) == 1


def test_a_full_mask_changes_nothing_and_sizes_compare() -> None:
    network, params, stats = random_network("mlp", (5,), hidden=[8, 6])
    same, same_params, _ = compact(network, params, stats, full_mask(params))
    assert same.module.hidden == (8, 6)
    assert jax.tree.all(jax.tree.map(np.array_equal, same_params, params))

    small, small_params, small_stats = compact(
        network, params, stats, structured_prune(params, full_mask(params), 0.5)
    )
    assert small.module.hidden == (4, 3)
    assert size_on_disk(small_params) < size_on_disk(params)
    assert size_on_disk(params) >= 4 * parameter_count(params)  # float32, uncompressed
    seconds = inference_latency(small, small_params, small_stats, batch_size=2, repeats=3)
    assert 0.0 < seconds < 1.0


def test_projection_shortcuts_follow_the_nominal_design() -> None:
    """ResNet-50's block1_1 projects 4W stem channels to 16W; compacted to equal widths, it
    must keep its shortcut convolution (the parameters to load are there)."""
    network = build(ModelConfig(name="resnet50", width=4), CIFAR, 10)
    widths = [3] + [3, 3, 3] * 16  # the stem as wide as every block's output
    narrow = network.module.clone(widths=tuple(widths))
    params, _ = jax.eval_shape(dataclasses.replace(network, module=narrow).init, jax.random.key(0))
    assert params["block1_1"]["shortcut_conv"]["kernel"].shape == (1, 1, 3, 3)
    assert "shortcut_conv" not in params["block1_2"]


def test_other_modules_are_a_config_error() -> None:
    network = Network(nn.Dense(3), (4,))
    params = {"params": {"kernel": jnp.ones((4, 3))}}
    with pytest.raises(ConfigError, match="compaction supports"):
        compact(network, params, {}, full_mask(params))
    # A supported module whose parameters are not its family's: the layout is checked too.
    mlp = dataclasses.replace(network, module=build(ModelConfig(), (4,), 3).module)
    with pytest.raises(ConfigError, match="structured pruning supports"):
        compact(mlp, params, {}, full_mask(params))


def test_a_latency_budget_stops_slow_calls_after_three_and_not_fast_ones():
    from lottery.deploy.latency import timed_median

    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.05)

    assert timed_median(slow, repeats=20, budget_s=0.1) >= 0.05
    assert len(calls) == 3  # 3 timed calls took the 0.1 s budget
    calls.clear()
    timed_median(lambda: calls.append(1), repeats=20, budget_s=0.1)
    assert len(calls) == 20  # fast calls: every repeat
    calls.clear()
    timed_median(slow, repeats=5)
    assert len(calls) == 5  # no budget: every repeat
