"""``train.replicas=N``: N seeds trained at once in one vmapped step, each in its own
replicate folder, equal to training each seed alone to float rounding.

"Equal to float rounding" is what any CPU can promise: the vmapped matmul is another XLA
kernel than the single seed's, so the two round differently (and differently again on AVX2
and AVX-512). Under SGD a rounding difference stays a rounding difference (1e-6 relative
after a level); under Adam it does not: for a weight whose gradient is near zero,
m / (sqrt(v) + eps) turns a difference of 1e-9 in the gradient into a full step, and the
weights of a level drift apart by a few percent. So SGD is compared weight for weight, and
Adam by what holds on every machine: the same masks (to a few weights at the pruning
threshold), weights close in norm, the same accuracy to a point or two.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery import experiment
from lottery.train import replicas
from lottery.train.replicas import ReplicaBatcher

from conftest import DIGITS, REPO, make_config

# One worker for the module: its trained fixtures are made once.
# Trains several seeds end to end: the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("replicas")]

QUICK = [*DIGITS, "pruning.levels=1"]
# SGD (and a learning rate for it): rounding is not amplified, so weights compare closely.
QUICK_SGD = [*QUICK, "optimizer=sgd", "optimizer.lr=0.05"]


def level_files(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every level's weights and mask under ``root``, by replicate/level."""
    found = {}
    for params in root.rglob("replicate_*/level_*/params.npz"):
        name = f"{params.parent.parent.name}/{params.parent.name}"
        found[name] = {
            **{f"params/{k}": v for k, v in np.load(params).items()},
            **{f"mask/{k}": v for k, v in np.load(params.parent / "mask.npz").items()},
        }
    return found


LEVELS = [f"replicate_{s}/level_{level}" for s in (0, 1) for level in (0, 1)]


def assert_same_training(together: Path, alone: Path) -> None:
    """Equal masks, and weights equal to float rounding, level by level (SGD)."""
    a, b = level_files(together), level_files(alone)
    assert sorted(a) == sorted(b) == LEVELS
    for name in a:
        for key, value in a[name].items():
            if key.startswith("mask/"):
                np.testing.assert_array_equal(value, b[name][key], err_msg=f"{name} {key}")
            else:
                np.testing.assert_allclose(
                    value, b[name][key], rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}"
                )


def assert_close_training(together: Path, alone: Path) -> None:
    """What Adam's amplified rounding still promises: masks equal but for at most 0.2% of
    the weights, and each level's weights within 10% of the other's in L2 norm."""
    a, b = level_files(together), level_files(alone)
    assert sorted(a) == sorted(b) == LEVELS
    for name in a:
        masks = [key for key in a[name] if key.startswith("mask/")]
        differ = sum(int(np.sum(a[name][k] != b[name][k])) for k in masks)
        assert differ <= 0.002 * sum(a[name][k].size for k in masks), (name, differ)
        weights = [key for key in a[name] if key.startswith("params/")]
        distance = np.sqrt(sum(np.sum((a[name][k] - b[name][k]) ** 2) for k in weights))
        norm = np.sqrt(sum(np.sum(b[name][k] ** 2) for k in weights))
        assert distance < 0.1 * norm, (name, distance / norm)


def train_alone(root: Path, overrides: list[str]) -> Path:
    """Seeds 0 and 1, each trained by a run of its own."""
    for seed in (0, 1):
        experiment.run(make_config([*overrides, f"seed={seed}"], root))
    return root


@pytest.fixture(scope="session")
def alone(tmp_path_factory) -> Path:
    return train_alone(tmp_path_factory.mktemp("alone"), QUICK_SGD)


@pytest.fixture
def vmapped(monkeypatch) -> list[int]:
    """The vmapped step, as on a GPU (a CPU device runs its replicas' own steps by default);
    the sizes of the groups of stretches that really ran together."""
    monkeypatch.setattr(replicas, "VMAP_ON_CPU", True)
    groups: list[int] = []
    run_group = ReplicaBatcher._run_group

    def spy(self, group):
        groups.append(len(group))
        return run_group(self, group)

    monkeypatch.setattr(ReplicaBatcher, "_run_group", spy)
    return groups


def test_replicas_train_together_as_each_seed_alone(alone, tmp_path, vmapped):
    _, rows = experiment.run(make_config([*QUICK_SGD, "train.replicas=2"], tmp_path))
    assert vmapped and set(vmapped) == {2}
    assert sorted((row["replicate"], row["level"]) for row in rows) == [
        (0, 0), (0, 1), (1, 0), (1, 1)
    ]
    assert_same_training(tmp_path, alone)
    # config.yaml records the command (seed 0, two replicas), not whichever seed wrote first.
    for recorded in tmp_path.rglob("config.yaml"):
        config = OmegaConf.load(recorded)
        assert (config.seed, config.train.replicas) == (0, 2), recorded
    # Another seed pair with one seed already finished: the other trains on its own.
    vmapped.clear()
    _, rows = experiment.run(make_config([*QUICK_SGD, "seed=1", "train.replicas=2"], tmp_path))
    assert vmapped and set(vmapped) == {1}
    assert {row["replicate"] for row in rows} == {0, 1, 2}


def test_replicas_under_adam_train_close_to_each_seed_alone(tmp_path, vmapped):
    alone_root = train_alone(tmp_path / "alone", QUICK)
    _, rows = experiment.run(make_config([*QUICK, "train.replicas=2"], tmp_path / "together"))
    assert vmapped and set(vmapped) == {2}
    assert_close_training(tmp_path / "together", alone_root)
    _, alone_rows = experiment.run(make_config([*QUICK, "seed=1"], alone_root))
    accuracy = {(r["replicate"], r["level"]): r["test_accuracy"] for r in alone_rows}
    for row in rows:
        assert abs(row["test_accuracy"] - accuracy[(row["replicate"], row["level"])]) < 0.03


# Two seeds on two CPU devices: which device each group of stretches ran on, as JSON.
TWO_DEVICES = """
import json, sys
import jax
from conftest import make_config
from lottery import experiment
from lottery.train import replicas
from lottery.train.replicas import ReplicaBatcher

assert jax.local_device_count() == 2
devices, run_group = [], ReplicaBatcher._run_group
def spy(self, group):
    devices.append(sorted(s.trainer.device.id for s in group))
    return run_group(self, group)
ReplicaBatcher._run_group = spy
overrides = json.loads(sys.argv[1])
experiment.run(make_config(overrides, sys.argv[2]))
print(json.dumps(sorted(set(map(tuple, devices)))))
"""


@pytest.mark.slow
def test_replicas_split_over_two_devices(alone, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO / "tests")}
    overrides = json.dumps([*QUICK_SGD, "train.replicas=2"])
    out = subprocess.run([sys.executable, "-c", TWO_DEVICES, overrides, str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    groups = json.loads(out.stdout.strip().splitlines()[-1])
    # Each seed on a device of its own, both computing at once (each its own steps).
    assert groups == [[0], [1]]
    assert_same_training(tmp_path, alone)
