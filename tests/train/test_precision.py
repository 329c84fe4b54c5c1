"""bfloat16 training (``train.precision=bf16``): bfloat16 compute, float32 master weights,
masks as exact as in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lottery import experiment, models
from lottery.config import ConfigError, ModelConfig, OptimizerConfig
from lottery.pruning import full_mask, magnitude_prune, prunable_paths
from lottery.train.optim import make_optimizer
from lottery.train.state import TrainState
from lottery.train.steps import make_step

from conftest import DIGITS, make_config

# On one worker, and the fixtures session-scoped, so that the VGG and its trained states are
# made once (a module-scoped fixture is made again when the worker comes back to the module).
# Trains a bf16 experiment end to end: the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("precision")]

@pytest.fixture(scope="session")
def vgg():
    network = models.build(ModelConfig(name="vgg11", width=4), (32, 32, 3), 10)
    params, stats = jax.device_get(network.init(jax.random.key(0)))
    prunable = prunable_paths(params, r".*kernel")
    mask = magnitude_prune(params, full_mask(params), prunable, "global", 0.5, {})
    x = jax.random.normal(jax.random.key(1), (16, 32, 32, 3))
    y = jnp.arange(16) % 10
    return network, params, stats, mask, prunable, x, y


def train(vgg, precision, steps=3):
    network, params, stats, mask, _, x, y = vgg
    tx = make_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.9))
    step = jax.jit(make_step(network, tx, lambda s: 0.1, precision=precision))
    masked = jax.tree.map(lambda p, m: np.where(m, p, 0.0), params, mask)
    state = TrainState.create(0, masked, stats, tx)
    losses = []
    for _ in range(steps):
        state, loss = step(state, mask, x, y, jax.random.key(2))
        losses.append(float(loss))
    return state, losses


@pytest.fixture(scope="session")
def trained(vgg):
    """(state, losses) after 3 steps at each precision, compiled once each."""
    return {precision: train(vgg, precision) for precision in ("bf16", "fp32")}


def test_bf16_keeps_float32_master_weights_and_exact_zeros(vgg, trained):
    _, _, _, mask, prunable, _, _ = vgg
    state, losses = trained["bf16"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.batch_stats))
    for path in prunable:
        weights = np.asarray(_at(state.params, path))
        pruned = ~np.asarray(_at(mask, path))
        assert np.all(weights[pruned] == 0.0) and not np.any(np.signbit(weights[pruned]))
    assert all(np.isfinite(losses))


def test_bf16_follows_float32_training_closely(trained):
    (_, bf16), (_, fp32) = trained["bf16"], trained["fp32"]
    assert bf16 != fp32  # it really computes in bfloat16
    assert np.allclose(bf16, fp32, rtol=0.05)


def test_an_unknown_precision_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.precision='fp8' is not known"):
        experiment.prepare(make_config([*DIGITS, "train.precision=fp8"], tmp_path))


def _at(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree
