"""Pruning at initialisation: each method's scores against an independent computation, and
prune_at_init's exact counts, alive-only choice, untouched non-prunable leaves and determinism."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax.flatten_util import ravel_pytree

from lottery.config import ConfigError, RunError
from lottery.models.mlp import MLP
from lottery.models.network import Network
from lottery.pruning.at_init import (
    METHODS,
    at_init_scores,
    keep_top,
    prune_at_init,
    synflow_schedule,
)
from lottery.pruning.mask import flatten, full_mask, unflatten

NETWORK = Network(MLP((8, 6), 3), (5,))
PRUNABLE = ["fc1/kernel", "fc2/kernel", "out/kernel"]  # 40 + 48 + 18 = 106 weights
TOTAL = 106


_init = jax.jit(NETWORK.init)


def make_params(seed: int = 0) -> dict:
    """Initial params with nonzero biases (so the tests see whether biases are handled)."""
    params, _ = _init(jax.random.key(seed))
    rng = np.random.default_rng(seed + 100)
    flat = {
        path: 0.3 * rng.normal(size=leaf.shape).astype(np.float32)
        if path.endswith("bias")
        else np.asarray(leaf)
        for path, leaf in flatten(params).items()
    }
    return unflatten(flat)


def make_batches(seed: int = 1, count: int = 2, size: int = 16) -> list:
    rng = np.random.default_rng(seed)
    return [
        (
            jnp.asarray(rng.normal(size=(size, 5)), jnp.float32),
            jnp.asarray(rng.integers(0, 3, size=size)),
        )
        for _ in range(count)
    ]


def partial_mask(params: dict, seed: int = 2, dead: float = 0.25) -> dict:
    """Some prunable weights already pruned; non-prunable leaves all True."""
    rng = np.random.default_rng(seed)
    flat = flatten(full_mask(params))
    for path in PRUNABLE:
        flat[path] = rng.random(flat[path].shape) >= dead
    return unflatten(flat)


def masked(params: dict, mask: dict) -> dict:
    return jax.tree.map(lambda p, m: np.where(m, np.asarray(p), 0.0), params, mask)


def concat(flat: dict, paths=PRUNABLE) -> np.ndarray:
    return np.concatenate([np.asarray(flat[p]).ravel() for p in paths])


def kept_set(mask: dict) -> set[int]:
    return set(np.flatnonzero(concat(flatten(mask))).tolist())


def top_k_alive(scores: np.ndarray, alive: np.ndarray, k: int) -> set[int]:
    """Indices (into the concatenated prunable weights) of the k alive ones of highest score."""
    candidates = np.flatnonzero(alive)
    order = np.argsort(-scores[candidates], kind="stable")
    return set(candidates[order[:k]].tolist())


def loss(params: dict, x, y, temperature: float = 1.0) -> jax.Array:
    logits, _ = NETWORK.apply(params, {}, x, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, y).mean()


def call(method, params, mask, keep, key=0, batches=None, **kwargs):
    batches = make_batches() if batches is None else batches
    return prune_at_init(
        method, NETWORK, params, {}, mask, PRUNABLE, batches, jax.random.key(key), keep, **kwargs
    )


def test_snip_scores_are_gradient_times_weight_and_the_largest_are_kept():
    params, batches = make_params(), make_batches()
    mask = partial_mask(params)
    live = masked(params, mask)
    grad = jax.jit(jax.grad(loss))
    grads = [grad(live, x, y) for x, y in batches]
    g = jax.tree.map(lambda *gs: sum(np.asarray(x) for x in gs) / len(gs), *grads)
    expected = np.abs(concat(flatten(g)) * concat(flatten(live)))

    scores = at_init_scores("snip", NETWORK, params, {}, mask, PRUNABLE, batches, jax.random.key(0))
    np.testing.assert_allclose(concat(scores), expected, rtol=1e-5, atol=1e-8)

    alive = concat(flatten(mask))
    new = call("snip", params, mask, keep=30, batches=batches)
    assert kept_set(new) == top_k_alive(expected, alive, 30)


def test_synflow_scores_match_the_closed_form_path_sums():
    params = make_params()
    mask = partial_mask(params)
    flat = {p: np.abs(np.asarray(v, np.float64)) for p, v in flatten(masked(params, mask)).items()}
    a1, a2, a3 = flat["fc1/kernel"], flat["fc2/kernel"], flat["out/kernel"]
    b1, b2 = flat["fc1/bias"], flat["fc2/bias"]
    # All |θ| ≥ 0 and the input is ones, so every ReLU is the identity:
    # R = 1ᵀ((1ᵀA1 + b1)A2 + b2)A3 1 + Σ b3, a sum over paths (Kronecker: ∂R/∂A[i, j] =
    # (signal into i) × (paths from j to the output)).
    h0 = np.ones(5)
    h1 = h0 @ a1 + b1
    h2 = h1 @ a2 + b2
    out_paths3 = np.ones(3)
    out_paths2 = a3 @ out_paths3
    out_paths1 = a2 @ out_paths2
    expected = {
        "fc1/kernel": a1 * np.outer(h0, out_paths1),
        "fc2/kernel": a2 * np.outer(h1, out_paths2),
        "out/kernel": a3 * np.outer(h2, out_paths3),
    }
    scores = at_init_scores("synflow", NETWORK, params, {}, mask, PRUNABLE, [], jax.random.key(0))
    for path in PRUNABLE:
        np.testing.assert_allclose(scores[path], expected[path], rtol=1e-5, err_msg=path)
    # Pruned weights score exactly 0, and the scores do not depend on the signs of θ.
    assert np.all(concat(scores)[~concat(flatten(mask))] == 0.0)
    negated = jax.tree.map(lambda p: -p, params)
    again = at_init_scores("synflow", NETWORK, negated, {}, mask, PRUNABLE, [], jax.random.key(0))
    np.testing.assert_allclose(concat(again), concat(scores), rtol=1e-6)


def test_grasp_scores_are_weight_times_hessian_gradient_product():
    params, batches = make_params(), make_batches()
    mask = partial_mask(params)
    live = masked(params, mask)
    flat = flatten(live)
    kernels = {p: jnp.asarray(flat[p]) for p in PRUNABLE}
    vector, unravel = ravel_pytree(kernels)

    def mean_loss(v):  # at the reference's temperature, the default
        params_v = unflatten({**flat, **unravel(v)})
        return sum(loss(params_v, x, y, 200.0) for x, y in batches) / len(batches)

    g = jax.jit(jax.grad(mean_loss))(vector)
    hessian = jax.jit(jax.hessian(mean_loss))(vector)  # 106 × 106, independent of jvp-of-grad
    hg = np.asarray(hessian @ g, np.float64)
    keep_score = np.asarray(vector, np.float64) * hg  # -(−w ⊙ Hg), Wang et al. 2020 eq. 8
    expected = concat(flatten(unravel(jnp.asarray(keep_score, jnp.float32))))

    scores = at_init_scores("grasp", NETWORK, params, {}, mask, PRUNABLE, batches, None)
    scale = np.max(np.abs(expected))
    assert scale > 0
    np.testing.assert_allclose(concat(scores), expected, rtol=1e-3, atol=1e-4 * scale)

    # Sign convention: GraSP removes the weights with the HIGHEST −w ⊙ Hg, so keeping k keeps
    # the k alive weights of highest w ⊙ Hg (and not the lowest).
    alive = concat(flatten(mask))
    ranked = np.sort(expected[alive])[::-1]
    keep = 30 + int(np.argmax(ranked[29:59] - ranked[30:60]))  # a clear boundary, not a near tie
    assert ranked[keep - 1] - ranked[keep] > 1e-3 * scale
    new = call("grasp", params, mask, keep=keep, batches=batches)
    assert kept_set(new) == top_k_alive(expected, alive, keep)
    assert kept_set(new) != top_k_alive(-expected, alive, keep)


def test_magnitude_init_keeps_the_largest_weights():
    params = make_params()
    mask = partial_mask(params)
    weights = np.abs(concat(flatten(params)))
    new = call("magnitude_init", params, mask, keep=25)
    assert kept_set(new) == top_k_alive(weights, concat(flatten(mask)), 25)


@pytest.mark.parametrize("method", METHODS)
def test_prune_at_init_keeps_exactly_keep_alive_weights_and_leaves_the_rest(method):
    params = make_params()
    mask = partial_mask(params)
    flat_before = {p: np.array(m) for p, m in flatten(mask).items()}
    # A non-prunable leaf with a False entry: it must come back unchanged, not reset to True.
    flat_mask = flatten(mask)
    flat_mask["fc2/bias"] = np.array(flat_mask["fc2/bias"])
    flat_mask["fc2/bias"][0] = False
    mask = unflatten(flat_mask)
    flat_before["fc2/bias"] = flat_mask["fc2/bias"].copy()

    kwargs = {"synflow_rounds": 5} if method == "synflow" else {}
    new = call(method, params, mask, keep=33, key=3, **kwargs)
    flat_new = flatten(new)
    assert sorted(flat_new) == sorted(flat_before)
    assert sum(int(np.count_nonzero(flat_new[p])) for p in PRUNABLE) == 33
    for path, before in flat_before.items():
        assert flat_new[path].dtype == bool and flat_new[path].shape == before.shape
        if path in PRUNABLE:
            assert not np.any(flat_new[path] & ~before), f"{path}: a pruned weight came back"
        else:
            np.testing.assert_array_equal(flat_new[path], before, err_msg=path)
    # The input mask is not modified, and the same inputs give the same mask.
    for path, before in flat_before.items():
        np.testing.assert_array_equal(flatten(mask)[path], before)
    again = call(method, params, mask, keep=33, key=3, **kwargs)
    assert kept_set(again) == kept_set(new)


@pytest.mark.parametrize("method", ["snip", "magnitude_init"])
def test_keeping_all_or_none(method):
    params = make_params()
    mask = partial_mask(params)
    alive = int(concat(flatten(mask)).sum())
    assert kept_set(call(method, params, mask, keep=alive)) == kept_set(mask)
    assert kept_set(call(method, params, mask, keep=0)) == set()


def test_random_depends_on_the_key_only():
    params = make_params()
    mask = full_mask(params)
    a = call("random", params, mask, keep=50, key=1)
    b = call("random", params, mask, keep=50, key=2)
    assert kept_set(a) != kept_set(b)
    other_params = make_params(seed=5)
    assert kept_set(call("random", other_params, mask, keep=50, key=1)) == kept_set(a)


def test_ties_go_to_the_earlier_path_then_the_lower_index():
    params = make_params()
    mask = full_mask(params)
    scores = {p: np.ones(np.shape(flatten(params)[p])) for p in PRUNABLE}
    new = keep_top(scores, mask, PRUNABLE, 45)
    assert kept_set(new) == set(range(45))  # all of fc1/kernel (40), then fc2's first 5


def test_synflow_one_round_is_single_shot_top_k_and_many_rounds_are_exact():
    params = make_params()
    mask = partial_mask(params)
    alive = concat(flatten(mask))
    scores = at_init_scores("synflow", NETWORK, params, {}, mask, PRUNABLE, [], jax.random.key(0))
    one = call("synflow", params, mask, keep=20, synflow_rounds=1)
    assert kept_set(one) == top_k_alive(concat(scores), alive, 20)
    for keep in (0, 7, 20, int(alive.sum())):
        many = call("synflow", params, mask, keep=keep, synflow_rounds=10)
        assert len(kept_set(many)) == keep
        assert kept_set(many) <= set(np.flatnonzero(alive).tolist())


def test_synflow_schedule_is_exponential_and_exact():
    assert synflow_schedule(100, 1, 2) == [10, 1]  # 100 · (1/100)^(1/2)
    assert synflow_schedule(1000, 10, 4) == [316, 100, 32, 10]
    schedule = synflow_schedule(106, 13, 100)
    assert schedule[-1] == 13 and len(schedule) == 100
    assert all(a >= b for a, b in itertools.pairwise(schedule))
    assert synflow_schedule(50, 0, 3) == [0, 0, 0]
    with pytest.raises(ValueError, match="at least 1 round"):
        synflow_schedule(50, 5, 0)


def test_unknown_method_is_a_config_error():
    params = make_params()
    with pytest.raises(ConfigError, match=r"'snipp'.*grasp") as info:
        call("snipp", params, full_mask(params), keep=10)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [-1, TOTAL + 1])
def test_keep_outside_alive_is_a_value_error(keep):
    params = make_params()
    with pytest.raises(ValueError, match=rf"keep {keep} .*{TOTAL}"):
        call("magnitude_init", params, full_mask(params), keep=keep)


def test_non_finite_scores_stop_with_a_run_error():
    params = make_params()
    scores = {p: np.ones(np.shape(flatten(params)[p])) for p in PRUNABLE}
    scores["fc2/kernel"][1, 2] = np.inf
    with pytest.raises(RunError, match="fc2/kernel"):
        keep_top(scores, full_mask(params), PRUNABLE, 10, "synflow")


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_data_driven_methods_need_a_batch(method):
    params = make_params()
    with pytest.raises(ValueError, match="at least one batch"):
        call(method, params, full_mask(params), keep=10, batches=[])


LINEAR = Network(MLP((), 3), (5,))  # softmax regression: GraSP's Hg has a closed form


def reference_grasp(kernel, bias, batches, temperature):
    """GraSP as Synaptic-Flow's ``GraSP.score`` computes it, by hand in float64 NumPy, for
    softmax regression ``z = (x W + b) / T``: ``g = Σ_batches ∂L/∂W``, then ``Hg = Σ_batches
    ∂(g · ∂L/∂W)/∂W`` (T in both passes), scores ``W ⊙ Hg / |Σ W ⊙ Hg|``."""
    w, b = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)

    def probabilities(x):
        z = (x @ w + b) / temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    data = [(np.asarray(x, np.float64), np.eye(3)[np.asarray(y)]) for x, y in batches]
    g = sum(x.T @ (probabilities(x) - onehot) / (len(x) * temperature) for x, onehot in data)
    hg = 0.0
    for x, _ in data:  # H v of the mean cross-entropy: x^T (softmax Jacobian (x v / T)) / (N T)
        p, dz = probabilities(x), x @ g / temperature
        dp = p * (dz - (p * dz).sum(axis=1, keepdims=True))
        hg = hg + x.T @ dp / (len(x) * temperature)
    scores = w * hg
    return scores / abs(scores.sum())


@pytest.mark.parametrize("temperature", [200.0, 1.0, 7.0])
def test_grasp_equals_the_reference_code_with_its_temperature_in_both_passes(temperature):
    params, _ = jax.jit(LINEAR.init)(jax.random.key(4))
    params = {"out": {"kernel": params["out"]["kernel"] * 3.0, "bias": jnp.array([0.5, -1, 2])}}
    batches = make_batches(seed=6, count=2, size=12)
    expected = reference_grasp(params["out"]["kernel"], params["out"]["bias"], batches,
                               temperature)
    kwargs = {} if temperature == 200.0 else {"grasp_temperature": temperature}  # the default
    scores = at_init_scores("grasp", LINEAR, params, {}, full_mask(params), ["out/kernel"],
                            batches, None, **kwargs)["out/kernel"]
    # The reference sums over batches and normalises by |Σ scores|: positive factors.
    scores = np.asarray(scores, np.float64) / abs(np.sum(scores))
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    if temperature == 200.0:  # T=200 ranks differently from the plain loss (not just a scale)
        plain = reference_grasp(params["out"]["kernel"], params["out"]["bias"], batches, 1.0)
        assert np.argsort(plain, axis=None).tolist() != np.argsort(expected, axis=None).tolist()


def test_grasp_temperature_is_a_grasp_key_checked_and_hashed_only_when_set():
    from lottery.config import Config, PruningConfig
    from lottery.pruning.strategies import strategy_for
    from lottery.store.hashing import hashed_values

    assert PruningConfig().grasp_temperature == 200.0
    _, settings = strategy_for(PruningConfig(method="grasp", grasp_temperature=1.0))
    assert settings.grasp_temperature == 1.0
    with pytest.raises(ConfigError, match=r"pruning\.grasp_temperature=1\.0 does not apply to "
                                          r"pruning\.method='snip'"):
        strategy_for(PruningConfig(method="snip", grasp_temperature=1.0))
    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"pruning\.grasp_temperature=.* must be a positive"):
            strategy_for(PruningConfig(method="grasp", grasp_temperature=bad))
    default = hashed_values(Config(pruning=PruningConfig(method="grasp")))
    assert "pruning.grasp_temperature" not in default
    plain = hashed_values(Config(pruning=PruningConfig(method="grasp", grasp_temperature=1.0)))
    assert plain["pruning.grasp_temperature"] == 1.0


class _BatchNormNet(nn.Module):
    """Dense, BatchNorm, ReLU, Dense: the smallest network with BatchNorm statistics."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(4, name="fc1")(x)
        x = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="bn")(x)
        return nn.Dense(3, name="out")(nn.relu(x))


def test_synflow_takes_the_absolute_value_of_batchnorm_statistics_as_the_reference():
    network = Network(_BatchNormNet(), (5,))
    params, _ = jax.jit(network.init)(jax.random.key(8))
    rng = np.random.default_rng(9)
    flat = {p: rng.normal(size=np.shape(v)).astype(np.float32) for p, v in flatten(params).items()}
    # Statistics of a rewind point k > 0: some running means negative.
    stats = {"bn": {"mean": np.array([-2.0, 1.5, -0.5, -10.0], np.float32),
                    "var": np.array([0.5, 2.0, 1.0, 0.25], np.float32)}}
    a1, b1, a2 = (np.abs(flat[p].astype(np.float64)) for p in ("fc1/kernel", "fc1/bias",
                                                               "out/kernel"))
    scale, mean, var = (np.abs(flat["bn/scale"].astype(np.float64)), np.abs(stats["bn"]["mean"]),
                        stats["bn"]["var"].astype(np.float64))
    # By hand: every entry of the state (running means included) made positive, input ones.
    h = np.ones(5) @ a1 + b1
    y = (h - mean) / np.sqrt(var + 1e-5) * scale + np.abs(flat["bn/bias"])
    relu = y > 0
    assert relu.any() and not relu.all()  # the ReLU matters: the means' signs would change it
    paths_out = a2 @ np.ones(3)
    expected = {
        "fc1/kernel": a1 * np.outer(np.ones(5), relu * scale / np.sqrt(var + 1e-5) * paths_out),
        "out/kernel": a2 * np.outer(np.maximum(y, 0), np.ones(3)),
    }
    prunable = ["fc1/kernel", "out/kernel"]
    params = unflatten(flat)
    scores = at_init_scores("synflow", network, params, stats, full_mask(params), prunable, [],
                            None)
    for path in prunable:
        np.testing.assert_allclose(scores[path], expected[path], rtol=1e-5, atol=1e-6,
                                   err_msg=path)


# -- pruning.score_mode: the network scored in eval or train mode --------------------------

BN_NETWORK = Network(_BatchNormNet(), (5,))
BN_PRUNABLE = ["fc1/kernel", "out/kernel"]
EPSILON = 1e-5  # _BatchNormNet's


def bn_state(seed: int = 8) -> tuple[dict, dict]:
    """Random weights and the BatchNorm statistics of a rewind point (not the batch's)."""
    params, _ = jax.jit(BN_NETWORK.init)(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    flat = {p: rng.normal(size=np.shape(v)).astype(np.float32) for p, v in flatten(params).items()}
    stats = {"bn": {"mean": np.array([-2.0, 1.5, -0.5, 0.3], np.float32),
                    "var": np.array([0.5, 2.0, 1.0, 0.25], np.float32)}}
    return unflatten(flat), stats


def hand_snip(params: dict, stats: dict, batches: list, train: bool) -> dict[str, np.ndarray]:
    """|g ⊙ w| for _BatchNormNet written out by hand (no Flax): BatchNorm normalises by the
    batch's mean and (biased) variance in train mode, else by the running statistics."""
    flat = flatten(params)

    def mean_loss(kernels):
        total = 0.0
        for x, y in batches:
            h = x @ kernels["fc1/kernel"] + flat["fc1/bias"]
            if train:
                mean, var = h.mean(axis=0), h.var(axis=0)
            else:
                mean, var = stats["bn"]["mean"], stats["bn"]["var"]
            z = (h - mean) / jnp.sqrt(var + EPSILON) * flat["bn/scale"] + flat["bn/bias"]
            logits = jax.nn.relu(z) @ kernels["out/kernel"] + flat["out/bias"]
            total += optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return total / len(batches)

    kernels = {p: jnp.asarray(flat[p]) for p in BN_PRUNABLE}
    g = jax.jit(jax.grad(mean_loss))(kernels)
    return {p: np.abs(np.asarray(g[p]) * flat[p]) for p in BN_PRUNABLE}


def snapshot(stats: dict) -> dict:
    return {p: np.array(v, copy=True) for p, v in flatten(stats).items()}


def test_snip_in_train_mode_normalises_by_each_batch_and_leaves_the_running_statistics():
    params, stats = bn_state()
    batches = make_batches(seed=3, count=2, size=16)
    before = snapshot(stats)

    def scores(mode):
        return at_init_scores("snip", BN_NETWORK, params, stats, full_mask(params), BN_PRUNABLE,
                              batches, None, score_mode=mode)

    train, evaluated = scores("train"), scores("eval")
    for mode, got in (("train", train), ("eval", evaluated)):
        expected = hand_snip(params, stats, batches, train=mode == "train")
        for path in BN_PRUNABLE:
            np.testing.assert_allclose(got[path], expected[path], rtol=1e-4, atol=1e-7,
                                       err_msg=f"{mode} {path}")
    assert not np.allclose(train["fc1/kernel"], evaluated["fc1/kernel"], rtol=0.1)
    # The default is eval (Synaptic-Flow's and the SNIP authors' code).
    default = at_init_scores("snip", BN_NETWORK, params, stats, full_mask(params), BN_PRUNABLE,
                             batches, None)
    np.testing.assert_array_equal(concat(default, BN_PRUNABLE), concat(evaluated, BN_PRUNABLE))
    # Scoring reads the running statistics and never writes them: the level trains from the
    # statistics it was given, and a train-mode mask does not depend on what ran before it.
    new = prune_at_init("snip", BN_NETWORK, params, stats, full_mask(params), BN_PRUNABLE,
                        batches, None, 10, score_mode="train")
    assert sorted(flatten(stats)) == sorted(before)
    for path, value in before.items():
        np.testing.assert_array_equal(flatten(stats)[path], value, err_msg=path)
    again = prune_at_init("snip", BN_NETWORK, params, stats, full_mask(params), BN_PRUNABLE,
                          batches, None, 10, score_mode="train")
    assert kept_set_of(new) == kept_set_of(again)


def kept_set_of(mask: dict) -> set[int]:
    return set(np.flatnonzero(concat(flatten(mask), BN_PRUNABLE)).tolist())


def test_synflow_in_train_mode_normalises_by_its_one_input_of_ones():
    params, stats = bn_state()
    flat = flatten(params)
    train = at_init_scores("synflow", BN_NETWORK, params, stats, full_mask(params), BN_PRUNABLE,
                           [], None, score_mode="train")
    # By hand: one example, so each feature equals its batch mean and BatchNorm outputs its
    # shift alone, |bn/bias| after SynFlow's |.|: no signal reaches fc1 through it.
    a2 = np.abs(flat["out/kernel"].astype(np.float64))
    expected_out = a2 * np.outer(np.abs(flat["bn/bias"]), np.ones(3))
    np.testing.assert_allclose(train["out/kernel"], expected_out, rtol=1e-5)
    np.testing.assert_allclose(train["fc1/kernel"], 0.0, atol=1e-6)
    evaluated = at_init_scores("synflow", BN_NETWORK, params, stats, full_mask(params),
                               BN_PRUNABLE, [], None)
    assert np.all(evaluated["fc1/kernel"] > 0)  # eval mode: the running statistics


def test_grasp_in_train_mode_differs_from_eval_with_batchnorm_and_equals_it_without():
    params, stats = bn_state()
    batches = make_batches(seed=3, count=2, size=16)

    def scores(network, params, stats, prunable, mode):
        got = at_init_scores("grasp", network, params, stats, full_mask(params), prunable,
                             batches, None, score_mode=mode)
        return concat(got, prunable)

    train = scores(BN_NETWORK, params, stats, BN_PRUNABLE, "train")
    evaluated = scores(BN_NETWORK, params, stats, BN_PRUNABLE, "eval")
    assert not np.allclose(train, evaluated, rtol=0.1, atol=1e-3 * np.abs(evaluated).max())
    # Without BatchNorm the two modes are one computation.
    plain = make_params()
    np.testing.assert_allclose(scores(NETWORK, plain, {}, PRUNABLE, "train"),
                               scores(NETWORK, plain, {}, PRUNABLE, "eval"), rtol=1e-6)


class _ConvBatchNormNet(nn.Module):
    """conv1, bn1, ReLU, global mean, out: one BatchNorm, a family structured pruning reads."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), name="conv1")(x)
        x = nn.BatchNorm(use_running_average=not train, epsilon=EPSILON, name="bn1")(x)
        return nn.Dense(3, name="out")(nn.relu(x).mean(axis=(1, 2)))


def test_structured_taylor_scores_in_train_mode_by_default_and_in_eval_mode_when_asked():
    from lottery.pruning.structured import unit_groups
    from lottery.pruning.taylor import taylor_scores

    network = Network(_ConvBatchNormNet(), (6, 6, 2))
    params, stats = jax.device_get(jax.jit(network.init)(jax.random.key(1)))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    batches = [(x, rng.integers(0, 3, 16).astype(np.int32))]
    groups = unit_groups(params)

    def scores(stats, **kwargs):
        got = taylor_scores(network, params, stats, full_mask(params), groups, batches, **kwargs)
        return np.concatenate(got)

    # conv1's output over the batch: its mean and biased variance per channel.
    h = np.asarray(nn.Conv(4, (3, 3)).apply({"params": params["conv1"]}, x))
    own = {"bn1": {"mean": h.mean(axis=(0, 1, 2)), "var": h.var(axis=(0, 1, 2))}}
    before = snapshot(stats)
    train = scores(stats)  # the default: train mode, by the batch's statistics
    # With one BatchNorm the activations and their gradients after it are the same in eval
    # mode with the batch's own statistics as running ones, and only then.
    np.testing.assert_allclose(scores(own, score_mode="eval"), train, rtol=1e-4, atol=1e-7)
    assert not np.allclose(scores(stats, score_mode="eval"), train, rtol=0.05)
    np.testing.assert_allclose(scores(stats, score_mode="train"), train, rtol=1e-6)
    for path, value in before.items():
        np.testing.assert_array_equal(flatten(stats)[path], value, err_msg=path)


def test_score_mode_applies_to_the_methods_that_score_a_network_and_is_hashed_only_when_set():
    from lottery.config import Config, PruningConfig
    from lottery.pruning.strategies import strategy_for
    from lottery.store.hashing import hashed_values

    def mode(**kwargs):
        return strategy_for(PruningConfig(**kwargs))[1].score_mode

    assert PruningConfig().score_mode is None  # the method's own
    for method in ("snip", "grasp", "synflow"):
        assert mode(method=method) == "eval"
        assert mode(method=method, score_mode="train") == "train"
    assert mode(method="magnitude", criterion="taylor") == "eval"
    assert mode(method="magnitude", criterion="taylor", score_mode="train") == "train"
    assert mode(method="structured", criterion="taylor") == "train"  # as while fine-tuning
    assert mode(method="structured", criterion="taylor", score_mode="eval") == "eval"
    rejected = {
        "magnitude": r"pruning\.score_mode=train applies to pruning\.criterion=taylor, not "
                     r"magnitude",
        "structured": r"pruning\.score_mode=train applies to pruning\.criterion=taylor, not l1",
        "magnitude_init": r"pruning\.score_mode='train' does not apply to "
                          r"pruning\.method='magnitude_init'",
        "random": r"does not apply to pruning\.method='random'",
        "gradual": r"does not apply to pruning\.method='gradual'",
    }
    for method, message in rejected.items():
        with pytest.raises(ConfigError, match=message) as info:
            strategy_for(PruningConfig(method=method, score_mode="train"))
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown pruning\.score_mode 'batch'; choose one of "
                                          r"eval, train"):
        strategy_for(PruningConfig(method="snip", score_mode="batch"))
    assert "pruning.score_mode" not in hashed_values(Config(pruning=PruningConfig(method="snip")))
    train = hashed_values(Config(pruning=PruningConfig(method="snip", score_mode="train")))
    assert train["pruning.score_mode"] == "train"
