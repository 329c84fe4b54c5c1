"""Every preset runs end to end (2 levels, a few steps) on tensorflow-datasets' mock data,
through the same ``tfds.data_source`` code path users run; without data it stops in one line."""

import pytest
import tensorflow_datasets as tfds

from lottery.config import ConfigError
from lottery.experiment import prepare
from lottery.experiment import run as run_experiment

from conftest import make_config, run_cli, summaries

SMALL = [
    "pruning.levels=1",
    "pruning.rewind_step=2it",
    "train.steps=4it",
    "train.batch_size=4",
    "train.eval_every=2it",
    "train.eval_batch_size=8",
    "dataset.validation_size=8",
    "progress=false",
]
TFDS_PRESETS = ["lenet_mnist_imp", "conv2_imp", "conv4_imp", "conv6_imp", "resnet_imp",
                "vgg16_imp"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", TFDS_PRESETS)
def test_preset_runs_two_levels_on_mock_data(preset, tmp_path):
    narrow = ["model.width=16"] if preset == "vgg16_imp" else []  # compiles 4x faster on a CPU
    cfg = make_config(
        [f"+experiment={preset}", *SMALL, *narrow, f"dataset.path={tmp_path / 'tfds'}"], tmp_path
    )
    with tfds.testing.mock_data(num_examples=40):
        run_experiment(cfg)
    found = summaries(tmp_path)
    assert sorted(found) == [(0, 0), (0, 1)]
    assert found[(0, 1)]["weights_remaining_pct"] < 100.0
    assert found[(0, 1)]["start_iteration"] == 2


@pytest.mark.slow
def test_imagenet_preset_streams_through_grain_on_mock_data(tmp_path):
    # ResNet-18 for the preset's ResNet-50: the streamed path is the same, and it compiles
    # in a third of the time on a CPU (ResNet-50's layers are checked in test_models.py).
    cfg = make_config(["+experiment=resnet50_imagenet_imp", *SMALL, "model=resnet18",
                       "train.batch_size=2",
                       "dataset.image_size=32", "train.eval_batch_size=4",
                       f"dataset.path={tmp_path / 'tfds'}"], tmp_path)
    with tfds.testing.mock_data(num_examples=6):
        run_experiment(cfg)
    found = summaries(tmp_path)
    assert sorted(found) == [(0, 0), (0, 1)]
    assert found[(0, 0)]["params_total"] == 11_689_512


def test_missing_cifar10_stops_with_one_line(tmp_path):
    result = run_cli(["+experiment=resnet_imp", f"dataset.path={tmp_path}",
                      f"results_root={tmp_path / 'results'}"], tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"cifar10 is not prepared in tfds data_dir {tmp_path}" in lines[0]
    assert "python -m lottery.data.prepare cifar10" in lines[0]
    assert not (tmp_path / "results").exists()


def test_missing_imagenet_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="imagenet2012 is not prepared"):
        prepare(make_config(["+experiment=resnet50_imagenet_imp",
                                 f"dataset.path={tmp_path}"]))


@pytest.mark.parametrize("preset", ["resnet_imp", "vgg16_imp"])
def test_cifar_presets_are_frankle_2020_table_1(preset):
    cfg = make_config([f"+experiment={preset}"])
    assert cfg.dataset.validation_size == 0  # all 50,000 training images
    assert (cfg.train.steps, cfg.train.batch_size) == ("63000it", 128)
    assert list(cfg.optimizer.milestones) == ["32000it", "48000it"]
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        0.1, 0.9, 1e-4)
    assert cfg.optimizer.warmup == "0it" and cfg.dataset.augment
    assert (cfg.model.batchnorm_init, cfg.model.bias_init) == ("uniform", "pytorch")


def test_the_imagenet_preset_prunes_one_shot():
    cfg = make_config(["+experiment=resnet50_imagenet_imp"])
    assert cfg.pruning.levels == 1 and cfg.pruning.fraction == 0.8
    assert (cfg.optimizer.lr, cfg.optimizer.warmup, cfg.train.batch_size) == (0.4, "5ep", 1024)


FAMILY_PRESETS = {
    "gradual_tfmot": ["pruning.begin_step=1it", "pruning.end_step=3it", "pruning.frequency=1it"],
    "snip_init": [],
    "synflow_init": ["pruning.synflow_rounds=3"],
    "structured_lenet": [],
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(FAMILY_PRESETS))
def test_family_preset_runs_a_pruned_level(preset, tmp_path, fashion_mnist_dir):
    small = [o for o in SMALL if "rewind_step" not in o] + ["dataset.validation_size=100"]
    cfg = make_config([f"+experiment={preset}", *small, *FAMILY_PRESETS[preset]], tmp_path)
    run_experiment(cfg)
    found = summaries(tmp_path)
    assert sorted(found) == [(0, 0), (0, 1)]
    level = found[(0, 1)]
    assert level["weights_remaining_pct"] < 100.0 and level["flops"] < level["dense_flops"]
    if preset == "gradual_tfmot":  # 80% of every kernel pruned by step 3 (tfmot's s_f)
        assert all(abs(layer["pct"] - 20.0) < 0.1 for layer in level["layers"].values())
    if preset == "structured_lenet":
        compacted = level["compacted"]
        assert compacted["params"] < compacted["dense"]["params"]
        assert compacted["latency_ms_batch_256"] > 0


@pytest.mark.slow
def test_the_structured_conv_preset_compacts_channels_on_mock_data(tmp_path):
    cfg = make_config(["+experiment=structured_conv", *SMALL, "model.width=8",
                       f"dataset.path={tmp_path / 'tfds'}"], tmp_path)
    with tfds.testing.mock_data(num_examples=40):
        run_experiment(cfg)
    level = summaries(tmp_path)[(0, 1)]
    assert level["compacted"]["params"] < level["compacted"]["dense"]["params"]
    assert level["theoretical_speedup"] > 1.0
