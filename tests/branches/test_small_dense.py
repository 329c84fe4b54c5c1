"""The small-dense baseline (Zhu & Gupta 2017): a narrower dense network with the ticket's
parameter count, trained from scratch beside the ticket."""

import json

import pytest

from lottery import experiment, models
from lottery.branches.small_dense import parameter_count, small_dense_network
from lottery.config import ModelConfig
from lottery.deploy.compact import scaled_network

from conftest import DIGITS, make_config


@pytest.mark.parametrize(
    ("name", "shape", "fraction"),
    [("lenet_300_100", (28, 28, 1), 0.107), ("conv4", (32, 32, 3), 0.2),
     # the convolutional networks with BatchNorm: the whole suite only
     pytest.param("resnet20", (32, 32, 3), 0.3, marks=pytest.mark.slow),
     pytest.param("vgg11", (32, 32, 3), 0.05, marks=pytest.mark.slow)],
)
def test_the_narrower_network_has_the_target_count_within_2_percent(name, shape, fraction):
    network = models.build(ModelConfig(name=name), shape, 10)
    target = round(fraction * parameter_count(network))
    small, factor = small_dense_network(network, target, scaled_network)
    assert abs(parameter_count(small) - target) <= 0.02 * target
    assert 0 < factor < 1
    assert type(small.module) is type(network.module)


@pytest.mark.slow
def test_each_level_trains_a_small_dense_network_of_its_size(tmp_path):
    experiment.run(make_config([*DIGITS, "branches=[small_dense]", "pruning.levels=1"],
                               tmp_path))
    found = 0
    for file in tmp_path.rglob("branch_small_dense_*/summary.json"):
        branch = json.loads(file.read_text())
        level = json.loads((file.parent.parent / "summary.json").read_text())
        info = branch["small_dense"]
        assert info["target_params"] == level["nonzero_params"]
        assert abs(info["params"] - info["target_params"]) <= 0.02 * info["target_params"]
        assert branch["nonzero_params"] == info["params"]  # dense: every weight alive
        assert branch["start_iteration"] == 0  # from scratch, the whole schedule
        assert abs(branch["weights_remaining_pct"] - level["weights_remaining_pct"]) < 2
        found += 1
    assert found == 1  # level 1


@pytest.mark.slow
def test_a_network_too_small_to_match_says_how_far_it_lands(tmp_path, capsys):
    # 40 weights alive in the hidden layers of 64-4-2-10 at level 1: widths (3, 2) are the
    # closest narrower network, about 4% short.
    experiment.run(make_config([*DIGITS, "model.hidden=[4,2]", "branches=[small_dense]",
                                "pruning.levels=1"], tmp_path))
    (file,) = tmp_path.rglob("branch_small_dense_*/summary.json")
    info = json.loads(file.read_text())["small_dense"]
    off = abs(info["params"] - info["target_params"]) / info["target_params"]
    assert off > 0.02
    warnings = [line for line in capsys.readouterr().err.splitlines() if "small_dense" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: small_dense at level 1")
    assert f"{100 * off:.1f}% off" in warnings[0]
