"""Invariant 1: a pruned weight is exactly 0.0 after every step, and its moments stay 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lottery import data, models
from lottery.config import DatasetConfig, ModelConfig, OptimizerConfig
from lottery.data import batch_order
from lottery.pruning import apply_mask, flatten, full_mask, unflatten
from lottery.train import TrainState, make_optimizer, make_schedule, make_train_steps

OPTIMIZERS = {
    "adam": OptimizerConfig(name="adam", lr=1e-2, weight_decay=1e-3),
    "sgd_momentum": OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov": OptimizerConfig(
        name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
    ),
    "adamw": OptimizerConfig(name="adamw", lr=1e-2, weight_decay=1e-2),
}


def random_kernel_mask(params, seed=0):
    rng = np.random.default_rng(seed)
    flat = {
        p: (rng.random(np.shape(v)) < 0.5) if p.endswith("kernel") else np.ones(np.shape(v), bool)
        for p, v in flatten(params).items()
    }
    return unflatten(flat)


def train(opt_cfg, mask, steps=300):
    dataset = data.load(DatasetConfig(name="digits", validation_size=200))
    network = models.build(ModelConfig(name="mlp", hidden=[64, 32]), dataset.input_shape, 10)
    params, stats = network.init(jax.random.key(0))
    tx = make_optimizer(opt_cfg)
    train_steps = make_train_steps(network, tx, make_schedule(opt_cfg, 1, steps))
    order = jnp.asarray(batch_order(0, len(dataset.train), 50, steps))
    state = TrainState.create(0, apply_mask(params, mask), stats, tx)
    device_mask = jax.tree.map(jnp.asarray, mask)
    x, y = jnp.asarray(dataset.train.x), jnp.asarray(dataset.train.y)
    for _ in range(steps // 100):
        state, _ = train_steps(state, device_mask, x, y, order, jax.random.key(1), num_steps=100)
    return params, state


def pruned_entries(tree, mask):
    """Values of every leaf whose path ends like a param's and has its shape, where pruned."""
    flat_mask = flatten(mask)
    out = []
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree)):
        path = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)
        match = next((p for p in flat_mask if path.endswith(p)), None)
        if match is not None and np.shape(leaf) == flat_mask[match].shape:
            out.append(np.asarray(leaf)[~flat_mask[match]])
    return np.concatenate(out)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_pruned_weights_and_their_moments_stay_exactly_zero(name):
    probe = models.build(ModelConfig(name="mlp", hidden=[64, 32]), (8, 8, 1), 10)
    mask = random_kernel_mask(probe.init(jax.random.key(0))[0])
    initial, state = train(OPTIMIZERS[name], mask)

    pruned = pruned_entries(state.params, mask)
    assert pruned.size > 1000
    assert np.all(pruned == 0.0) and not np.any(np.signbit(pruned)), "pruned weights must be +0.0"
    moments = pruned_entries(state.opt_state, mask)
    assert moments.size >= pruned.size and np.all(moments == 0.0)

    alive = flatten(mask)["fc1/kernel"]
    moved = flatten(jax.device_get(state.params))["fc1/kernel"][alive]
    assert np.mean(moved != flatten(initial)["fc1/kernel"][alive]) > 0.99, "alive weights train"


def test_without_the_mask_the_same_weights_would_not_stay_zero():
    """The control: the positions above move when nothing masks them."""
    probe = models.build(ModelConfig(name="mlp", hidden=[64, 32]), (8, 8, 1), 10)
    params = probe.init(jax.random.key(0))[0]
    mask = random_kernel_mask(params)
    _, state = train(OPTIMIZERS["adam"], full_mask(params), steps=100)
    assert np.mean(pruned_entries(state.params, mask) != 0.0) > 0.99
