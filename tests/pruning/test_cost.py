"""FLOPs and compression of pruned networks, against counts made by hand from the architectures."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lottery.models.cnn1d import CNN1D
from lottery.models.conv import PLANS, ConvNet
from lottery.models.mlp import MLP
from lottery.models.network import Network
from lottery.models.resnet_cifar import CifarResNet
from lottery.pruning import flatten, full_mask, unflatten
from lottery.pruning.cost import _traced_calls, cost_report, layer_shapes

LENET_FLOPS = 784 * 300 + 300 * 100 + 100 * 10  # 266,200


def init(network):
    """Params of the network's shapes; their values never matter to FLOPs (nor to this file).

    Shapes only, through ``jax.eval_shape``: a real init compiles op by op and takes seconds.
    """
    shapes, _ = jax.eval_shape(network.init, jax.random.key(0))
    return jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)


def conv_out(size, kernel, stride, pad):
    """Output length of a convolution, as the textbooks write it."""
    return (size + 2 * pad - kernel) // stride + 1


def kill(mask, path, count, seed=0):
    """``mask`` with ``count`` more weights of the leaf at ``path`` pruned, chosen at random."""
    flat = {p: np.array(m) for p, m in flatten(mask).items()}
    alive = np.flatnonzero(flat[path])
    dead = np.random.default_rng(seed).choice(alive, count, replace=False)
    flat[path].reshape(-1)[dead] = False
    return unflatten(flat)


@pytest.fixture(scope="module")
def lenet():
    network = Network(MLP((300, 100), 10), (28, 28, 1))
    return network, init(network)


def test_lenet_dense_flops_are_the_hand_count(lenet):
    network, params = lenet
    report = cost_report(network, params, full_mask(params))
    assert report["dense_flops"] == report["flops"] == LENET_FLOPS
    assert report["layer_flops"] == {
        "fc1/kernel": {"flops": 784 * 300, "dense_flops": 784 * 300},
        "fc2/kernel": {"flops": 300 * 100, "dense_flops": 300 * 100},
        "out/kernel": {"flops": 100 * 10, "dense_flops": 100 * 10},
    }
    assert report["total_params"] == report["nonzero_params"] == LENET_FLOPS + 300 + 100 + 10
    assert cost_report(network, params, None) == report


@pytest.mark.parametrize("k", [1, 1234, 784 * 300 - 1])
def test_pruning_k_weights_of_fc1_removes_k_flops(lenet, k):
    network, params = lenet
    report = cost_report(network, params, kill(full_mask(params), "fc1/kernel", k))
    assert report["flops"] == LENET_FLOPS - k
    assert report["dense_flops"] == LENET_FLOPS
    assert report["layer_flops"]["fc1/kernel"]["flops"] == 784 * 300 - k
    assert report["layer_flops"]["fc2/kernel"]["flops"] == 300 * 100


def test_compression_and_speedup_of_a_hand_made_mask(lenet):
    network, params = lenet
    mask = kill(full_mask(params), "fc1/kernel", 200_000, seed=1)
    mask = kill(mask, "out/kernel", 600, seed=2)
    mask = kill(mask, "fc2/bias", 10, seed=3)  # a parameter, but no multiply-add
    total = 266_610
    nonzero = total - 200_000 - 600 - 10
    flops = LENET_FLOPS - 200_000 - 600
    report = cost_report(network, params, mask)
    assert report["total_params"] == total
    assert report["nonzero_params"] == nonzero
    assert report["compression_ratio"] == pytest.approx(total / nonzero)
    assert report["flops"] == flops
    assert report["theoretical_speedup"] == pytest.approx(LENET_FLOPS / flops)
    # JSON as it is, with Python numbers only.
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert all(type(report[k]) is int for k in ("nonzero_params", "total_params", "flops"))


def test_everything_pruned_gives_null_ratios_not_infinity(lenet):
    network, params = lenet
    mask = jax.tree.map(lambda m: np.zeros_like(m), full_mask(params))
    report = cost_report(network, params, mask)
    assert report["flops"] == report["nonzero_params"] == 0
    assert report["compression_ratio"] is None and report["theoretical_speedup"] is None
    json.dumps(report, allow_nan=False)


def test_conv2_flops_follow_padding_and_pooling():
    width = 8
    network = Network(ConvNet(PLANS[2], 10, width), (32, 32, 3))
    params = init(network)
    side = conv_out(32, 3, 1, 1)  # padding 1 keeps 32
    pooled = side // 2  # the 2x2 max-pool
    expected = {
        "conv1/kernel": 3 * 3 * 3 * width * side * side,
        "conv2/kernel": 3 * 3 * width * width * side * side,
        "fc1/kernel": pooled * pooled * width * 256,
        "fc2/kernel": 256 * 256,
        "out/kernel": 256 * 10,
    }
    report = cost_report(network, params, full_mask(params))
    assert {p: f["dense_flops"] for p, f in report["layer_flops"].items()} == expected
    assert report["flops"] == sum(expected.values())
    assert layer_shapes(network, params)["conv2/kernel"].positions == side * side


def test_structured_pruning_counts_the_channels_left():
    """Channel c dead in conv1's outputs and conv2's inputs: both layers lose its work."""
    width, c = 8, 5
    network = Network(ConvNet(PLANS[2], 10, width), (32, 32, 3))
    params = init(network)
    flat = {p: np.array(m) for p, m in flatten(full_mask(params)).items()}
    flat["conv1/kernel"][..., c] = False
    flat["conv1/bias"][c] = False
    flat["conv2/kernel"][:, :, c, :] = False
    report = cost_report(network, params, unflatten(flat))
    positions = 32 * 32
    lost = 3 * 3 * 3 * positions + 3 * 3 * width * positions
    assert report["dense_flops"] - report["flops"] == lost
    assert report["layer_flops"]["conv2/kernel"]["flops"] == 3 * 3 * (width - 1) * width * positions


def test_resnet20_flops_follow_strides_and_shortcuts():
    w = 4
    network = Network(CifarResNet(20, 10, w), (32, 32, 3))
    params = init(network)
    s1 = conv_out(32, 3, 1, 1)  # 32
    s2 = conv_out(s1, 3, 2, 1)  # 16: the first block of stage 2 strides
    s3 = conv_out(s2, 3, 2, 1)  # 8
    assert conv_out(s1, 1, 2, 0) == s2  # the 1x1 shortcut lands on the same grid
    layers = layer_shapes(network, params)
    expected = {
        "stem_conv/kernel": 3 * 3 * 3 * w * s1 * s1,
        "block1_1/conv1/kernel": 3 * 3 * w * w * s1 * s1,
        "block2_1/conv1/kernel": 3 * 3 * w * 2 * w * s2 * s2,
        "block2_1/conv2/kernel": 3 * 3 * 2 * w * 2 * w * s2 * s2,
        "block2_1/shortcut_conv/kernel": w * 2 * w * s2 * s2,
        "block3_1/conv1/kernel": 3 * 3 * 2 * w * 4 * w * s3 * s3,
        "out/kernel": 4 * w * 10,
    }
    assert {p: layers[p].dense_flops for p in expected} == expected
    # The whole network: stem, 6 + 6 + 6 block convolutions, 2 shortcuts, out.
    total = (
        3 * 3 * 3 * w * s1**2
        + 6 * 9 * w * w * s1**2
        + (9 * w * 2 * w + 5 * 9 * (2 * w) ** 2 + w * 2 * w) * s2**2
        + (9 * 2 * w * 4 * w + 5 * 9 * (4 * w) ** 2 + 2 * w * 4 * w) * s3**2
        + 4 * w * 10
    )
    assert len(layers) == 1 + 18 + 2 + 1
    assert cost_report(network, params, None)["dense_flops"] == total


def test_mnist1d_cnn_counts_1d_output_positions():
    network = Network(CNN1D(10, 25), (40,))
    params = init(network)
    lengths = [40]
    for kernel in (5, 3, 3):
        lengths.append(conv_out(lengths[-1], kernel, 2, 1))
    assert lengths == [40, 19, 10, 5]
    layers = layer_shapes(network, params)
    assert [layers[f"conv{i}/kernel"].positions for i in (1, 2, 3)] == lengths[1:]
    assert layers["out/kernel"].positions == 1
    report = cost_report(network, params, None)
    assert report["dense_flops"] == 5 * 25 * 19 + 3 * 25 * 25 * 10 + 3 * 25 * 25 * 5 + 125 * 10


def test_the_trace_is_cached_and_its_result_protected(lenet):
    network, params = lenet
    layer_shapes(network, params)
    hits = _traced_calls.cache_info().hits
    first = layer_shapes(network, params)
    first.pop("fc1/kernel")
    assert _traced_calls.cache_info().hits == hits + 1
    assert "fc1/kernel" in layer_shapes(network, params)


def test_params_of_another_network_are_refused(lenet):
    network, _ = lenet
    other = init(Network(MLP((300, 50), 10), (28, 28, 1)))
    with pytest.raises(ValueError, match="fc2/kernel"):
        cost_report(network, other, None)


class _Custom(nn.Module):
    """A layer whose kernel no Dense/Conv call owns."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="fc")(x.reshape((x.shape[0], -1)))
        kernel = self.param("kernel", nn.initializers.ones, (4, 3))
        return jnp.dot(x, kernel)


def test_a_kernel_outside_dense_and_conv_is_reported_not_silently_skipped():
    network = Network(_Custom(), (6,))
    params = init(network)
    with pytest.warns(UserWarning, match="leave out kernel"):
        report = cost_report(network, params, None)
    assert report["dense_flops"] == 6 * 4
