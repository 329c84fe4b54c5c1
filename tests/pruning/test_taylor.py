"""The Taylor criterion (Molchanov et al. 2017): a unit whose output is always zero costs
nothing to remove, whatever its weights, and goes first."""

import jax
import numpy as np

from lottery import models
from lottery.config import ModelConfig
from lottery.pruning import flatten, full_mask
from lottery.pruning.structured import structured_prune, unit_groups
from lottery.pruning.taylor import taylor_scores, unit_flops

DEAD = 5  # conv1's channel that only reads input channel 0, which the data never sets


def toy():
    """Conv-2 whose conv1 channel DEAD has large weights on input channel 0 only, and
    images whose channel 0 is always 0: that feature map is 0 for every example."""
    network = models.build(ModelConfig(name="conv2", width=8), (8, 8, 3), 10)
    params, stats = jax.device_get(network.init(jax.random.key(0)))
    kernel = np.array(params["conv1"]["kernel"])
    kernel[..., DEAD] = 0.0
    kernel[:, :, 0, DEAD] = 5.0  # the largest norm of the layer
    params["conv1"]["kernel"] = kernel
    params["conv1"]["bias"] = np.zeros_like(params["conv1"]["bias"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    x[..., 0] = 0.0
    y = rng.integers(0, 10, 32).astype(np.int32)
    return network, params, stats, [(x, y)]


def removed(old, new, layer="conv1"):
    alive_before = np.asarray(old[layer]["kernel"]).any(axis=(0, 1, 2))
    alive_after = np.asarray(new[layer]["kernel"]).any(axis=(0, 1, 2))
    return np.flatnonzero(alive_before & ~alive_after)


def test_a_feature_map_that_is_always_zero_is_removed_first():
    network, params, stats, batches = toy()
    mask = full_mask(params)
    groups = unit_groups(params)
    scores = taylor_scores(network, params, stats, mask, groups, batches)
    conv1 = [g.name for g in groups].index("conv1")
    assert scores[conv1][DEAD] == 0.0 and np.all(np.delete(scores[conv1], DEAD) > 0)
    fraction = 1.2 / groups[conv1].size  # one channel of conv1
    taylor = structured_prune(params, mask, fraction, "layerwise", "taylor", scores)
    assert removed(mask, taylor).tolist() == [DEAD]
    # The weights' norm ranks the same channel last: the test tells the criteria apart.
    l1 = structured_prune(params, mask, fraction, "layerwise", "l1")
    assert DEAD not in removed(mask, l1)
    # Scores are normalised per layer (L2), so that layers compare.
    for score in scores:
        np.testing.assert_allclose(np.linalg.norm(score), 1.0, rtol=1e-6)


def test_the_flops_variant_prefers_the_costlier_layer():
    network, params, stats, batches = toy()
    groups = unit_groups(params)
    flops = unit_flops(network, params, groups)
    assert max(float(f.max()) for f in flops) == 1.0
    plain = taylor_scores(network, params, stats, full_mask(params), groups, batches)
    weighted = taylor_scores(network, params, stats, full_mask(params), groups, batches,
                             flops, 0.5)
    for p, w, f in zip(plain, weighted, flops, strict=True):
        np.testing.assert_allclose(w, p - 0.5 * f)
    assert set(flatten(params)) == set(flatten(full_mask(params)))


def reference_global_removal(params, x, y, fraction):
    """Molchanov et al. 2017 by hand in NumPy on a ReLU MLP fc1-fc2-out: per unit
    Θ(c) = mean over examples |z_c · ∂L_n/∂z_c| (z the Dense output, L_n the example's
    cross-entropy), then Θ / ||Θ of its layer||_2, then the lowest ``fraction`` of all
    hidden units removed, ranked together."""
    w = {k: {n: np.asarray(v, np.float64) for n, v in leaf.items()} for k, leaf in params.items()}
    z1 = x @ w["fc1"]["kernel"] + w["fc1"]["bias"]
    z2 = np.maximum(z1, 0) @ w["fc2"]["kernel"] + w["fc2"]["bias"]
    logits = np.maximum(z2, 0) @ w["out"]["kernel"] + w["out"]["bias"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d_logits = p - np.eye(logits.shape[1])[y]  # ∂L_n/∂logits, one example each
    d_z2 = (d_logits @ w["out"]["kernel"].T) * (z2 > 0)
    d_z1 = (d_z2 @ w["fc2"]["kernel"].T) * (z1 > 0)
    normalised = []
    for layer, (z, d_z) in (("fc1", (z1, d_z1)), ("fc2", (z2, d_z2))):
        theta = np.abs(z * d_z).mean(axis=0)
        theta = theta / np.linalg.norm(theta)
        normalised += [(score, layer, unit) for unit, score in enumerate(theta)]
    count = round(fraction * len(normalised))
    removed = sorted(normalised)[:count]
    return {layer: sorted(u for _, name, u in removed if name == layer) for layer in ("fc1", "fc2")}


def test_global_taylor_ranks_units_by_their_layer_l2_normalised_scores_as_the_paper():
    """Layers of different widths (40 and 10 units): dividing by each layer's mean would
    rank them as if they had the same size and remove other units (28 of 50 on 200-50)."""
    network = models.build(ModelConfig(name="mlp", hidden=(40, 10)), (8,), 3)
    params, stats = jax.device_get(network.init(jax.random.key(3)))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    fraction = 0.2  # 10 of the 50 hidden units
    expected = reference_global_removal(params, x, y, fraction)
    assert expected["fc1"] and expected["fc2"]  # a ranking across both layers

    mask = full_mask(params)
    groups = unit_groups(params)
    scores = taylor_scores(network, params, stats, mask, groups, [(x, y)])
    new = structured_prune(params, mask, fraction, "global", "taylor", scores)
    for layer in ("fc1", "fc2"):
        alive = np.asarray(new[layer]["kernel"]).any(axis=0)
        assert np.flatnonzero(~alive).tolist() == expected[layer], layer
