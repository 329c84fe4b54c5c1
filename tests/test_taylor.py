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
