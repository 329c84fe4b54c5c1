"""The pieces of a lottery run in one's own code: ``lottery.pruning.prune`` and ``masked``
in a hand-written optax loop, and ``lottery.run`` for notebooks (the command line's store)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lottery
from lottery.config import ConfigError
from lottery.kernels.xla_cpu import EIGEN_CONVOLUTIONS
from lottery.pruning import flatten, masked, prune, prune_count

from conftest import DIGITS, run_cli

QUICK = [*DIGITS, "train.steps=60it", "train.eval_every=30it"]


class TinyNet(nn.Module):
    """A model of the user's own, not one of lottery's."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


def tiny_problem() -> tuple[dict, jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(1), (64, 8))
    y = jnp.argmax(x[:, :3], axis=1)
    params = TinyNet().init(jax.random.key(0), x)["params"]
    return params, x, y


def train_by_hand(params, mask, x, y, steps: int):
    """The user's loop: optax.adam under ``masked``, ``optax.apply_updates``."""
    tx = masked(optax.adam(1e-2), mask)
    state = tx.init(params)

    def loss(p):
        logits = TinyNet().apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def test_masked_adam_keeps_pruned_weights_at_plus_zero_and_their_moments_at_zero() -> None:
    params, x, y = tiny_problem()
    mask = prune(params, jax.tree.map(lambda p: np.ones(p.shape, bool), params), fraction=0.5)
    # The pruned weights are NOT zeroed first: the wrapper must bring them to +0.0 itself.
    trained, state = train_by_hand(params, mask, x, y, steps=20)
    adam = state.inner[0]
    flat_mask = flatten(mask)
    for path, alive in flat_mask.items():
        weights = np.asarray(flatten(trained)[path])
        pruned = ~alive
        assert np.all(weights[pruned] == 0.0) and not np.any(np.signbit(weights[pruned])), path
        assert np.all(np.asarray(flatten(adam.mu)[path])[pruned] == 0.0), path
        assert np.all(np.asarray(flatten(adam.nu)[path])[pruned] == 0.0), path
        # The alive weights did train.
        assert np.all(weights[alive] != np.asarray(flatten(params)[path])[alive]), path
    assert any((~m).any() for m in flat_mask.values())


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_prune_removes_exactly_round_p_n_of_the_alive_kernel_weights(method, scope) -> None:
    params, _, _ = tiny_problem()
    full = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
    once = prune(params, full, method, 0.35, scope, key=jax.random.key(3))
    twice = prune(params, once, method, 0.35, scope, key=jax.random.key(4))
    kernels = [p for p in flatten(params) if p.endswith("kernel")]

    def alive(mask, paths):
        return sum(int(np.count_nonzero(flatten(mask)[p])) for p in paths)

    groups = [kernels] if scope == "global" else [[p] for p in kernels]
    for group in groups:
        n = alive(full, group)
        assert alive(once, group) == n - prune_count(0.35, n) == n - round(0.35 * n + 1e-9)
        m = alive(once, group)
        assert alive(twice, group) == m - prune_count(0.35, m)
        assert np.all(~flatten(once)[group[0]] <= ~flatten(twice)[group[0]])  # pruned stay
    assert all(np.all(flatten(twice)[p]) for p in flatten(params) if p.endswith("bias"))
    if method == "magnitude":  # the smallest go: every pruned |w| <= every kept |w|
        weights = np.concatenate([np.abs(np.asarray(flatten(params)[p])).ravel() for p in kernels])
        keep = np.concatenate([flatten(once)[p].ravel() for p in kernels])
        assert scope == "layerwise" or weights[~keep].max() <= weights[keep].min()


def test_prune_rejects_an_unknown_method_in_one_line() -> None:
    params, _, _ = tiny_problem()
    with pytest.raises(ConfigError, match=r"method='snap'.*magnitude, random"):
        prune(params, params, method="snap")


@pytest.mark.slow
def test_run_returns_a_row_per_level_in_the_store_of_the_command_line(tmp_path) -> None:
    frame = lottery.run([*QUICK, f"results_root={tmp_path / 'notebook'}"])
    assert list(frame.level) == [0, 1, 2] and set(frame.branch) == {"imp"}
    assert frame.test_accuracy.between(0, 1).all()

    # The same overrides on the command line: the same experiment folder (hash). Without
    # XLA_FLAGS in its environment, the command sets its own CPU flag.
    env_flags = os.environ.pop("XLA_FLAGS", None)
    try:
        done = run_cli([*QUICK, f"results_root={tmp_path / 'cli'}"], cwd=tmp_path)
    finally:
        if env_flags is not None:
            os.environ["XLA_FLAGS"] = env_flags
    assert done.returncode == 0, done.stderr[-2000:]
    cli_frame = lottery.analysis.load_results(tmp_path / "cli")
    assert list(cli_frame.hash) == list(frame.hash) and list(cli_frame.level) == [0, 1, 2]
    cli_summary = json.loads((Path(cli_frame.path[0]) / "summary.json").read_text())
    assert EIGEN_CONVOLUTIONS in cli_summary["environment"]["xla_flags"]

    # The driver's magnitude pruning (global, 20%) is prune's on the same trained weights.
    tickets = [lottery.load(path) for path in frame.path]
    for before, after in itertools.pairwise(tickets):
        mask = prune(before.params, before.mask, "magnitude", fraction=0.2, scope="global")
        for path, expected in flatten(after.mask).items():
            np.testing.assert_array_equal(flatten(mask)[path], np.asarray(expected), path)


def test_run_rejects_a_bad_override_with_the_command_lines_line(tmp_path) -> None:
    bad = [*QUICK, "pruning.fractoin=0.3", f"results_root={tmp_path}"]
    with pytest.raises(ConfigError) as raised:
        lottery.run(bad)
    done = run_cli(bad, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {raised.value}"
    assert "pruning.fractoin" in str(raised.value) and not any(tmp_path.iterdir())
