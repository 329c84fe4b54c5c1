"""Data parallelism over 8 CPU devices (``train.data_parallel=true``): each batch split over
the devices, the same training as on one device to float rounding, BatchNorm included, for
device-held and streamed data alike."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

# Trains a small VGG (BatchNorm) 8 steps on one device and on 8, in one process with 8
# CPU devices; prints the largest differences of weights, BatchNorm statistics and loss.
# (At lr 0.1 this tiny network on random data is chaotic: rounding differences of 1e-7
# grow to 1e-2 within 4 steps.)
SCRIPT = """
import numpy as np, jax
import lottery
lottery.use_cpu_settings()  # the command line's CPU settings, before JAX starts
from lottery import models
from lottery.config import ModelConfig, OptimizerConfig
from lottery.data.dataset import Dataset, Split, StreamingDataset
from lottery.pruning import full_mask, magnitude_prune, prunable_paths
from lottery.train import Trainer

assert jax.local_device_count() == 8
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 32, 32, 3)).astype(np.float32)
y = (np.arange(96) % 10).astype(np.int32)
data = Dataset("toy", Split(x[:64], y[:64]), Split(x[64:80], y[64:80]), Split(x[80:], y[80:]), 10)
network = models.build(ModelConfig(name="vgg11", width=4), (32, 32, 3), 10)
params, stats = jax.device_get(network.init(jax.random.key(0)))
mask = magnitude_prune(params, full_mask(params), prunable_paths(params, ".*kernel"), "global",
                       0.5, {})
params = jax.tree.map(lambda p, m: np.where(m, p, 0.0), params, mask)
results = []
for parallel in (False, True):
    trainer = Trainer(network, data, OptimizerConfig(name="sgd", lr=0.01, momentum=0.9),
                      batch_size=16, total_steps=8, steps_per_epoch=4, eval_batch_size=16,
                      data_seed=0, data_parallel=parallel)
    run = trainer.train(trainer.start(0, params, stats, mask), 8)
    results.append(jax.device_get((run.state.params, run.state.batch_stats, run.loss_sum)))
    if parallel:
        leaf = jax.tree.leaves(run.state.params)[0]
        print("devices", len(leaf.sharding.device_set))
(p1, s1, l1), (p8, s8, l8) = results[:2]

def train_batches(batch_size, seed, first):  # the training split read batch by batch
    order = np.random.default_rng(seed).permutation(64)
    for step in range(first, 10**9):
        index = order[(np.arange(batch_size) + step * batch_size) % 64]
        yield x[index], y[index]

stream = StreamingDataset("toy", 10, (32, 32, 3), 64, train_batches, {})
for parallel in (False, True):  # streamed data: each host batch split over the devices
    trainer = Trainer(network, stream, OptimizerConfig(name="sgd", lr=0.01, momentum=0.9),
                      batch_size=16, total_steps=8, steps_per_epoch=4, eval_batch_size=16,
                      data_seed=0, data_parallel=parallel)
    run = trainer.train(trainer.start(0, params, stats, mask), 8)
    results.append(jax.device_get((run.state.params, run.state.batch_stats, run.loss_sum)))
    if parallel:
        leaf = jax.tree.leaves(run.state.params)[0]
        print("stream_devices", len(leaf.sharding.device_set))
        xs, _ = trainer.feed._stacked(x[:16], y[:16])  # a step's batch: 2 examples a device
        print("stream_slices", sorted({s.data.shape[1] for s in xs.addressable_shards}))
(q1, r1, m1), (q8, r8, m8) = results[2:]
diff = lambda a, b: max(float(np.max(np.abs(u - v))) for u, v in
                        zip(jax.tree.leaves(a), jax.tree.leaves(b)))
pruned = max(float(np.max(np.abs(np.where(m, 0.0, w)))) for w, m in
             zip(jax.tree.leaves(p8), jax.tree.leaves(mask)))
print("params", diff(p1, p8)); print("stats", diff(s1, s8)); print("loss", abs(l1 - l8))
print("pruned", pruned)
print("stream_params", diff(q1, q8)); print("stream_stats", diff(r1, r8))
print("stream_loss", abs(m1 - m8)); print("stream_vs_device", diff(p8, q8))
from lottery.config import ConfigError
from lottery.train.loop import batch_sharding
try:
    batch_sharding(12)
except ConfigError as error:
    print("error", error)
"""


@pytest.mark.slow
def test_eight_devices_train_as_one_does():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    values = dict(line.split(maxsplit=1) for line in out.stdout.splitlines())
    assert values["devices"] == "8"  # the state really lives on all 8 devices
    assert float(values["params"]) < 1e-5
    assert float(values["stats"]) < 1e-5  # BatchNorm statistics over the whole batch
    assert float(values["loss"]) < 1e-4
    assert float(values["pruned"]) == 0.0
    # train.data_parallel=true with streamed data: the same, never ignored
    assert values["stream_devices"] == "8"
    assert values["stream_slices"] == "[2]"
    assert float(values["stream_params"]) < 1e-5
    assert float(values["stream_stats"]) < 1e-5
    assert float(values["stream_loss"]) < 1e-4
    assert float(values["stream_vs_device"]) > 1e-3  # really another data order: not a copy
    assert values["error"] == (
        "train.batch_size=12 does not split over the 8 local devices of "
        "train.data_parallel=true; choose a multiple of 8"
    )
