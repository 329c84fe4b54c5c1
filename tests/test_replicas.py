"""``train.replicas=N``: N seeds trained at once in one vmapped step, each in its own
replicate folder, equal to training each seed alone to float rounding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lottery import experiment
from lottery.train import replicas
from lottery.train.replicas import ReplicaBatcher

from conftest import DIGITS, REPO, make_config

# One worker for the module: its trained fixtures are made once.
pytestmark = pytest.mark.xdist_group("replicas")

QUICK = [*DIGITS, "pruning.levels=1"]


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


def assert_same_training(together: Path, alone: Path) -> None:
    """Equal masks, and weights equal to float rounding, level by level."""
    a, b = level_files(together), level_files(alone)
    assert sorted(a) == sorted(b) == [
        f"replicate_{s}/level_{level}" for s in (0, 1) for level in (0, 1)
    ]
    for name in a:
        for key, value in a[name].items():
            if key.startswith("mask/"):
                np.testing.assert_array_equal(value, b[name][key], err_msg=f"{name} {key}")
            else:
                np.testing.assert_allclose(value, b[name][key], atol=1e-5, err_msg=f"{name} {key}")


@pytest.fixture(scope="session")
def alone(tmp_path_factory) -> Path:
    """Seeds 0 and 1, each trained by a run of its own."""
    root = tmp_path_factory.mktemp("alone")
    for seed in (0, 1):
        experiment.run(make_config([*QUICK, f"seed={seed}"], root))
    return root


def test_replicas_train_together_as_each_seed_alone(alone, tmp_path, monkeypatch):
    # The vmapped step, as on a GPU (a CPU device runs its replicas' own steps by default).
    monkeypatch.setattr(replicas, "VMAP_ON_CPU", True)
    groups = []
    run_group = ReplicaBatcher._run_group

    def spy(self, group):  # the stretches really ran together
        groups.append(len(group))
        return run_group(self, group)

    monkeypatch.setattr(ReplicaBatcher, "_run_group", spy)
    _, rows = experiment.run(make_config([*QUICK, "train.replicas=2"], tmp_path))
    assert groups and set(groups) == {2}
    assert sorted((row["replicate"], row["level"]) for row in rows) == [
        (0, 0), (0, 1), (1, 0), (1, 1)
    ]
    assert_same_training(tmp_path, alone)
    # Another seed pair with one seed already finished: the other trains on its own.
    groups.clear()
    _, rows = experiment.run(make_config([*QUICK, "seed=1", "train.replicas=2"], tmp_path))
    assert groups and set(groups) == {1}
    assert {row["replicate"] for row in rows} == {0, 1, 2}


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
    overrides = json.dumps([*QUICK, "train.replicas=2"])
    out = subprocess.run([sys.executable, "-c", TWO_DEVICES, overrides, str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    groups = json.loads(out.stdout.strip().splitlines()[-1])
    # Each seed on a device of its own, both computing at once (each its own steps: the
    # same bits as alone, which the float tolerance below also accepts).
    assert groups == [[0], [1]]
    assert_same_training(tmp_path, alone)
