"""Magnitude pruning removes exactly round(p * n) of the n alive weights, the smallest ones."""

import numpy as np
import pytest

from lottery.config import ConfigError
from lottery.pruning import (
    apply_mask,
    flatten,
    full_mask,
    magnitude_prune,
    prunable_paths,
    prune_count,
    sparsity_report,
)

SHAPES = {"fc1": (64, 32), "fc2": (32, 16), "out": (16, 10)}


def random_params(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        name: {
            "kernel": rng.normal(size=shape).astype(np.float32),
            "bias": rng.normal(size=shape[-1:]).astype(np.float32),
        }
        for name, shape in SHAPES.items()
    }


def alive(mask, path):
    return int(np.count_nonzero(flatten(mask)[path]))


def run_levels(scope, fraction, layer_fractions, levels):
    """Prune level by level, with fresh 'trained' weights at each level, as IMP does."""
    params = random_params(0)
    paths = prunable_paths(params, r".*kernel")
    masks = [full_mask(params)]
    for level in range(1, levels + 1):
        trained = apply_mask(random_params(level), masks[-1])
        masks.append(magnitude_prune(trained, masks[-1], paths, scope, fraction, layer_fractions))
        yield level, trained, masks[-2], masks[-1], paths


def test_prune_count_rounds_half_up_and_never_exceeds_the_alive():
    assert prune_count(0.2, 2560) == 512
    assert prune_count(0.2, 2048) == 410  # 409.6
    assert prune_count(0.1, 145) == 15  # 14.5 rounds up
    assert prune_count(0.1, 144) == 14  # 14.4
    assert prune_count(0.0, 1000) == 0
    assert prune_count(0.99, 1) == 1


def test_global_pruning_with_an_output_layer_override_counts_exactly():
    shared = ["fc1/kernel", "fc2/kernel"]
    expected_shared = [2560, 2048, 1638, 1310, 1048]  # minus round(0.2 n) each level
    expected_out = [160, 144, 130, 117, 105]  # minus round(0.1 n) each level
    for level, _, _, mask, _ in run_levels("global", 0.2, {"out": 0.1}, 4):
        assert sum(alive(mask, p) for p in shared) == expected_shared[level]
        assert alive(mask, "out/kernel") == expected_out[level]


def test_layerwise_pruning_counts_each_layer_on_its_own():
    expected = {"fc1/kernel": [2048], "fc2/kernel": [512], "out/kernel": [160]}
    rates = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "out/kernel": 0.1}
    for path in expected:
        for _ in range(5):
            n = expected[path][-1]
            expected[path].append(n - int(np.floor(rates[path] * n + 0.5)))
    for level, _, _, mask, _ in run_levels("layerwise", 0.2, {"out": 0.1}, 5):
        for path, counts in expected.items():
            assert alive(mask, path) == counts[level], (path, level)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_pruned_weights_are_the_smallest_alive_and_stay_pruned(scope):
    for _, trained, before, after, paths in run_levels(scope, 0.2, {}, 3):
        flat_w, flat_b, flat_a = flatten(trained), flatten(before), flatten(after)
        groups = [paths] if scope == "global" else [[p] for p in paths]
        for group in groups:
            removed = np.concatenate([np.abs(flat_w[p][flat_b[p] & ~flat_a[p]]) for p in group])
            kept = np.concatenate([np.abs(flat_w[p][flat_a[p]]) for p in group])
            assert removed.size > 0 and removed.max() <= kept.min()
        for p in paths:
            assert not np.any(flat_a[p] & ~flat_b[p]), "a pruned weight came back"
        for p in flat_a:
            if p.endswith("bias"):
                assert flat_a[p].all(), "biases are never pruned"


def test_ties_are_broken_deterministically_by_path_then_position():
    params = {
        "a": {"kernel": np.ones((4,), np.float32)},
        "b": {"kernel": np.ones((4,), np.float32)},
    }
    paths = prunable_paths(params, r".*kernel")
    mask = magnitude_prune(params, full_mask(params), paths, "global", 0.5, {})
    assert flatten(mask)["a/kernel"].tolist() == [False] * 4
    assert flatten(mask)["b/kernel"].tolist() == [True] * 4


def test_sparsity_after_l_levels_follows_one_minus_p_to_the_l():
    params = random_params(0)
    for level, _, _, mask, paths in run_levels("global", 0.2, {}, 10):
        report = sparsity_report(mask, paths)
        assert report["weights_remaining_pct"] == pytest.approx(100 * 0.8**level, abs=0.05)
        assert report["params_total"] == sum(np.size(p) for p in flatten(params).values())


def test_layer_override_that_matches_no_layer_is_a_clear_error():
    params = random_params(0)
    paths = prunable_paths(params, r".*kernel")
    with pytest.raises(ConfigError, match="'output' matches no prunable layer; layers are fc1"):
        magnitude_prune(params, full_mask(params), paths, "global", 0.2, {"output": 0.1})


def test_prunable_regex_that_selects_nothing_is_a_clear_error():
    with pytest.raises(ConfigError, match="selects no parameter"):
        prunable_paths(random_params(0), r".*weight")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"score_examples": 50},
         r"pruning\.score_examples=50 applies to pruning\.criterion=taylor, not magnitude"),
        ({"method": "structured", "criterion": "l1", "score_examples": 50},
         r"pruning\.score_examples=50 applies to pruning\.criterion=taylor, not l1"),
        ({"method": "synflow", "score_examples": 50},
         r"pruning\.score_examples=50 does not apply to pruning\.method='synflow'"),
        ({"method": "snip", "synflow_rounds": 3},
         r"pruning\.synflow_rounds=3 does not apply to pruning\.method='snip'"),
        ({"method": "random", "score_examples": 50},
         r"pruning\.score_examples=50 does not apply to pruning\.method='random'"),
        ({"criterion": "taylor", "score_examples": 0}, r"pruning\.score_examples=0 must be at"),
        ({"method": "grasp", "score_examples": 0}, r"pruning\.score_examples=0 must be at"),
    ],
)
def test_a_setting_the_method_does_not_read_is_a_clear_error(settings, message):
    """Set where nothing reads it, a setting would change nothing without a word."""
    from lottery.config import PruningConfig
    from lottery.pruning.strategies import strategy_for

    with pytest.raises(ConfigError, match=message):
        strategy_for(PruningConfig(**settings))


@pytest.mark.parametrize(
    "settings",
    [{"criterion": "taylor", "score_examples": 50}, {"method": "grasp", "score_examples": 50},
     {"method": "synflow", "synflow_rounds": 3}],
)
def test_a_setting_the_method_reads_is_accepted(settings):
    from lottery.config import PruningConfig
    from lottery.pruning.strategies import strategy_for

    _, checked = strategy_for(PruningConfig(**settings))
    for key in ("score_examples", "synflow_rounds"):
        if key in settings:
            assert getattr(checked, key) == settings[key]
