"""One experiment over several processes (``lottery.distributed``): 2 processes on this host
(2 CPU devices each, a coordinator on 127.0.0.1) train as one process with 4 devices does,
to float rounding, for device-held and streamed data; and the settings that name the
coordinator, checked in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lottery.config import ConfigError
from lottery.distributed import coordinator_settings, under_srun

from conftest import REPO

# Trains a small VGG (BatchNorm, half its kernels pruned) 8 steps with train.data_parallel,
# from device-held data and from a stream of host batches; writes the weights, BatchNorm
# statistics, training loss and evaluation to the file named by argv[1]. A process of
# several when the LOTTERY_* variables say so. (At lr 0.1 this network on random data is
# chaotic; at 0.01 rounding differences stay at rounding.)
SCRIPT = """
import json, sys
import lottery
lottery.use_cpu_settings()
from lottery import distributed
distributed.start()
import numpy as np, jax
from lottery import models
from lottery.config import ModelConfig, OptimizerConfig
from lottery.data.dataset import Dataset, Split, StreamingDataset
from lottery.pruning import full_mask, magnitude_prune, prunable_paths
from lottery.train import Trainer
from lottery.train.loop import host_tree

rng = np.random.default_rng(0)
x = rng.normal(size=(96, 32, 32, 3)).astype(np.float32)
y = (np.arange(96) % 10).astype(np.int32)
data = Dataset("toy", Split(x[:64], y[:64]), Split(x[64:80], y[64:80]), Split(x[80:], y[80:]), 10)

def train_batches(batch_size, seed, first):
    order = np.random.default_rng(seed).permutation(64)
    for step in range(first, 10**9):
        index = order[(np.arange(batch_size) + step * batch_size) % 64]
        yield x[index], y[index]

def eval_batches(split):
    return lambda size: ((split.x[i:i + size], split.y[i:i + size])
                         for i in range(0, len(split), size))

def process_train_batches(batch_size, seed, first, index, count):
    rows = batch_size // count  # this process's rows of each batch, as imagenet's
    for x_, y_ in train_batches(batch_size, seed, first):
        yield x_[index * rows:(index + 1) * rows], y_[index * rows:(index + 1) * rows]

stream = StreamingDataset("toy", 10, (32, 32, 3), 64, train_batches,
                          {"val": eval_batches(data.validation), "test": eval_batches(data.test)},
                          process_train_batches=process_train_batches)
network = models.build(ModelConfig(name="vgg11", width=4), (32, 32, 3), 10)
params, stats = jax.device_get(network.init(jax.random.key(0)))
mask = magnitude_prune(params, full_mask(params), prunable_paths(params, ".*kernel"), "global",
                       0.5, {})
params = jax.tree.map(lambda p, m: np.where(m, p, 0.0), params, mask)
out = {"processes": jax.process_count(), "devices": jax.device_count(),
       "primary": distributed.is_primary()}
for name, dataset in (("device", data), ("stream", stream)):
    trainer = Trainer(network, dataset, OptimizerConfig(name="sgd", lr=0.01, momentum=0.9),
                      batch_size=16, total_steps=8, steps_per_epoch=4, eval_batch_size=16,
                      data_seed=0, data_parallel=True)
    run = trainer.train(trainer.start(0, params, stats, mask), 8)
    leaf = jax.tree.leaves(run.state.params)[0]
    out[name] = {
        "params": [a.tolist() for a in jax.tree.leaves(host_tree(run.state.params))],
        "stats": [a.tolist() for a in jax.tree.leaves(host_tree(run.state.batch_stats))],
        "loss": run.loss_sum, "eval": trainer.evaluate(run.state.params, run.state.batch_stats),
        "state_devices": len(leaf.sharding.device_set),
        "rows_of": getattr(trainer.feed, "process", None),
    }
distributed.barrier("done")
json.dump(out, open(sys.argv[1], "w"))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(devices: int, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOTTERY_", "SLURM_"))}
    return {**env, "JAX_PLATFORMS": "cpu", **variables,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def processes(count: int, devices: int, folder: Path) -> list[dict]:
    """Run SCRIPT as ``count`` processes of ``devices`` CPU devices each; their outputs."""
    port = free_port()
    started = []
    for index in range(count):
        settings = {} if count == 1 else {
            "LOTTERY_COORDINATOR": f"127.0.0.1:{port}", "LOTTERY_NUM_PROCESSES": str(count),
            "LOTTERY_PROCESS_ID": str(index)}
        started.append(subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(folder / f"{count}_{index}.json")], cwd=REPO,
            env=environment(devices, **settings), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    for process in started:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    return [json.loads((folder / f"{count}_{i}.json").read_text()) for i in range(count)]


def largest_difference(a: list, b: list) -> float:
    return max(float(np.max(np.abs(np.array(u) - np.array(v)))) for u, v in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_their_devices(tmp_path):
    (one,) = processes(1, 4, tmp_path)
    first, second = processes(2, 2, tmp_path)
    assert (one["processes"], one["devices"]) == (1, 4)
    assert (first["processes"], first["devices"]) == (2, 4)  # one mesh of both processes
    assert (first["primary"], second["primary"]) == (True, False)
    for feed in ("device", "stream"):
        assert first[feed]["state_devices"] == 4  # the state replicated over both processes
        rows_of = (first[feed].pop("rows_of"), second[feed].pop("rows_of"))
        if feed == "stream":  # each process read its own rows of each batch
            assert rows_of == ([0, 2], [1, 2])
        assert first[feed] == second[feed]  # both processes hold the same run, bit for bit
        # The same global batch split over 4 devices either way: equal to float rounding.
        assert largest_difference(one[feed]["params"], first[feed]["params"]) < 1e-5
        assert largest_difference(one[feed]["stats"], first[feed]["stats"]) < 1e-5
        assert abs(one[feed]["loss"] - first[feed]["loss"]) < 1e-4
        for metric, value in one[feed]["eval"].items():
            assert abs(value - first[feed]["eval"][metric]) < 1e-5, metric


COORDINATOR = {"LOTTERY_COORDINATOR": "127.0.0.1:1234", "LOTTERY_NUM_PROCESSES": "2",
               "LOTTERY_PROCESS_ID": "1"}


def test_the_coordinator_is_named_by_three_variables():
    assert coordinator_settings({}) is None
    assert coordinator_settings(COORDINATOR) == ("127.0.0.1:1234", 2, 1)


@pytest.mark.parametrize(("changed", "message"), [
    ({"LOTTERY_PROCESS_ID": None}, "LOTTERY_PROCESS_ID not set beside LOTTERY_COORDINATOR"),
    ({"LOTTERY_COORDINATOR": "localhost"}, "LOTTERY_COORDINATOR='localhost' is not HOST:PORT"),
    ({"LOTTERY_NUM_PROCESSES": "two"}, "LOTTERY_NUM_PROCESSES='two' is not a number"),
    ({"LOTTERY_PROCESS_ID": "2"}, "LOTTERY_PROCESS_ID=2 with LOTTERY_NUM_PROCESSES=2"),
])
def test_a_bad_coordinator_setting_is_one_line(changed, message):
    environ = {k: v for k, v in {**COORDINATOR, **changed}.items() if v is not None}
    with pytest.raises(ConfigError) as error:
        coordinator_settings(environ)
    assert str(error.value).startswith(message)
    assert "LOTTERY_COORDINATOR=HOST:PORT LOTTERY_NUM_PROCESSES=N LOTTERY_PROCESS_ID=I" in str(
        error.value)


def test_srun_with_several_tasks_is_several_processes():
    assert under_srun({"SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"})
    assert not under_srun({"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"})
    assert not under_srun({"SLURM_NTASKS": "2"})  # the batch script, not a step of srun
    assert not under_srun({})


# The default experiment shortened: MNIST-1D, level 0 and 1 of 300 steps (200 left after
# level 1's first checkpoint, where the kill lands), with one of its two controls (random
# re-initialisation; each training over two processes costs seconds of the suite).
EXPERIMENT = ["pruning.levels=1", "train.steps=300it", "train.eval_every=100it",
              "train.checkpoint_every=100it", "branches=[random_reinit]",
              "train.data_parallel=true", "progress=false"]


def start_command(count: int, devices: int, root: Path, port: int) -> list[subprocess.Popen]:
    """``python -m lottery`` as ``count`` processes of one experiment (``devices`` CPU
    devices each), writing under ``root``."""
    started = []
    for index in range(count):
        settings = {} if count == 1 else {
            "LOTTERY_COORDINATOR": f"127.0.0.1:{port}", "LOTTERY_NUM_PROCESSES": str(count),
            "LOTTERY_PROCESS_ID": str(index)}
        started.append(subprocess.Popen(
            [sys.executable, "-m", "lottery", *EXPERIMENT, f"results_root={root}"], cwd=REPO,
            env=environment(devices, **settings), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    return started


def run_command(count: int, devices: int, root: Path) -> list[str]:
    """Run the command as ``count`` processes to the end; their stdouts."""
    outputs = []
    for process in start_command(count, devices, root, free_port()):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs


def store_contents(root: Path) -> dict[str, Path]:
    """The files of a results root by their path in it (Hydra's records apart: named by
    time and process id)."""
    return {str(p.relative_to(root)): p for p in root.rglob("*")
            if p.is_file() and ".hydra" not in p.parts}


def assert_same_results(one: Path, other: Path) -> None:
    """The same files; the levels' weights, accuracies and losses equal to float rounding,
    the branches' accuracies within 1%.

    The same global batch split over 4 devices either way: the order of the sums differs,
    and 300 Adam steps carry the rounding (measured on the levels: 1e-5 in the
    weights, accuracies equal). A control amplifies it (measured on jax 0.12.1 for the
    random-pruned one: 1e-2 in the weights of level 2's, 4 test examples of 1,000), so a
    branch's weights are not compared.
    """
    files, others = store_contents(one), store_contents(other)
    assert sorted(files) == sorted(others)
    summaries = [name for name in files if name.endswith("summary.json")]
    assert len(summaries) == 3  # levels 0 and 1, and level 1's branch
    for name in summaries:
        branch = "/branch_" in name
        a, b = (json.loads(p.read_text()) for p in (files[name], others[name]))
        for key in ("test_accuracy", "val_accuracy", "test_loss", "early_stop_accuracy"):
            if a.get(key) is not None:
                assert abs(a[key] - b[key]) <= (0.01 if branch else 1e-4), (name, key)
        if not branch:
            weights = name.replace("summary.json", "params.npz")
            a, b = np.load(files[weights]), np.load(others[weights])
            assert largest_difference([a[k] for k in a.files], [b[k] for k in a.files]) < 1e-4
    for name in (name for name in files if name.endswith("mask.npz")):
        a, b = np.load(files[name]), np.load(others[name])
        assert all(np.array_equal(a[k], b[k]) for k in a.files), name


def checkpoint_of_level_1(root: Path) -> bool:
    """Whether level 1 has a whole checkpoint (Orbax renames ``100.orbax-checkpoint-tmp``
    to ``100`` when written)."""
    folders = root.glob("*/*/replicate_0/level_1.partial/checkpoints/*")
    return any(folder.name.isdigit() for folder in folders)


@pytest.mark.slow
def test_two_processes_run_the_experiment_as_one_and_resume_after_a_kill(tmp_path):
    run_command(1, 4, tmp_path / "one")
    # Kill process 1 of 2 in the middle of level 1: process 0 ends soon after (its
    # collective with the dead peer fails), and the same command run again finishes.
    root = tmp_path / "two"
    primary, other = start_command(2, 2, root, free_port())
    for _ in range(1200):
        if checkpoint_of_level_1(root) or other.poll() is not None:
            break
        time.sleep(0.05)
    assert checkpoint_of_level_1(root) and other.poll() is None, "level 1 ended before the kill"
    other.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    primary.communicate(timeout=120)
    assert primary.returncode != 0
    assert time.monotonic() - killed_at < 60  # not the collectives' 30-minute timeout
    other.communicate()
    assert not [p for p in root.rglob("level_1") if p.is_dir()]  # it stopped inside level 1
    first, second = run_command(2, 2, root)
    assert "level 1: resuming from step" in first
    # The same results as one process whose devices split the same global batches.
    assert_same_results(tmp_path / "one", root)
    # Process 0 alone says what it did (the others print only Gloo's own lines) and writes.
    assert "level  1:" in first and "results:" in first
    assert [line for line in second.splitlines() if not line.startswith("[Gloo]")] == []
    hydra = list(root.rglob(".hydra/*"))
    assert len(hydra) == 1 and len(list(hydra[0].iterdir())) == 3  # one record, process 0's


@pytest.mark.slow
def test_several_processes_without_data_parallel_is_one_line(tmp_path):
    """Each process would train the whole batch alone: refused before anything is written."""
    port, root = free_port(), tmp_path / "results"
    started = []
    for index in range(2):
        settings = {"LOTTERY_COORDINATOR": f"127.0.0.1:{port}", "LOTTERY_NUM_PROCESSES": "2",
                    "LOTTERY_PROCESS_ID": str(index)}
        started.append(subprocess.Popen(
            [sys.executable, "-m", "lottery", "train.steps=100it", "progress=false",
             f"results_root={root}"], cwd=REPO, env=environment(1, **settings),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in started:
        _, err = process.communicate(timeout=120)
        lines = [line for line in err.splitlines() if not line.startswith("[Gloo]")]
        assert process.returncode == 2
        assert lines == [
            "error: this command is one of 2 processes of one experiment, which train it "
            "together with train.data_parallel=true (each batch split over all their devices); "
            "add train.data_parallel=true, or run one process"
        ]
    assert not root.exists()
