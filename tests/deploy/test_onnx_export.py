"""ONNX export: onnxruntime computes the JAX network's logits, pruned weights stay 0.0.

Variables are random draws shaped like the models' (BatchNorm statistics included), at
small widths, with half of every kernel pruned. Logits are compared to 2e-5 of their largest
magnitude: the file computes in float32 what JAX computes, with BatchNorm folded into the
convolution's kernel and bias and onnxruntime's own convolution algorithms, so they differ
by float32 rounding, measured at 1e-6 of that scale or less on every model here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
import pytest
from test_compact import CIFAR, random_network

from lottery.config import ConfigError
from lottery.deploy import compact, export_onnx, onnx_session, to_onnx
from lottery.deploy.onnx_export import onnx_latency
from lottery.deploy.quantize import quantize
from lottery.models import Network
from lottery.pruning import apply_mask, flatten, full_mask, unflatten
from lottery.pruning.structured import block_prune, structured_prune

from conftest import cases

TOLERANCE = 2e-5  # of the largest logit's magnitude (see the module's docstring)

CASES = [
    ("mlp", (5,), {"hidden": [8, 6]}),
    ("lenet_300_100", (28, 28, 1), {}),
    ("conv2", CIFAR, {"width": 4}),
    ("conv4", CIFAR, {"width": 4}),
    ("conv6", CIFAR, {"width": 4}),
    ("vgg16", CIFAR, {"width": 4}),  # 2x2 maps: Flax's convolution, not the CPU kernels'
    ("resnet20", CIFAR, {"width": 4}),
    ("resnet56", CIFAR, {"width": 4}),
    ("resnet18", (64, 64, 3), {"width": 4}),  # ImageNet stem: strided conv and max-pool
    ("resnet50", (64, 64, 3), {"width": 4}),  # bottlenecks
    ("mnist1d_cnn", (40,), {"width": 6}),  # 1-D convolutions
    ("mobilenetv2_cifar", CIFAR, {"width": 8}),  # depthwise convolutions, ReLU6
    ("mobilenetv2", (64, 64, 3), {"width": 8}),  # strided stem, strided depthwise filters
]
# The other depths of a family (resnet32/110, resnet34, vgg11/13/19) are its builder with
# other block counts: the same layers in the file.


def half_pruned(params: dict) -> tuple[dict, dict]:
    """``params`` with a random half of every kernel set to 0.0, and that mask."""
    rng = np.random.default_rng(3)
    mask = {
        path: (rng.random(np.shape(leaf)) < 0.5) if path.endswith("kernel") else m
        for (path, leaf), m in zip(
            flatten(params).items(), flatten(full_mask(params)).values(), strict=True
        )
    }
    mask = unflatten(mask)
    return apply_mask(params, mask), mask


def jax_logits(network: Network, params: dict, stats: dict, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(lambda v: network.apply(params, stats, v, train=False)[0])(x))


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * scale)


def onnx_kernel(model: onnx.ModelProto, path: str) -> np.ndarray:
    """The initializer of kernel ``path``, in the layout of its Flax kernel."""
    (init,) = [i for i in model.graph.initializer if i.name == path]
    values = onnx.numpy_helper.to_array(init)
    if values.ndim > 2:  # OI + spatial -> spatial + IO, as Flax's HWIO
        values = np.transpose(values, (*range(2, values.ndim), 1, 0))
    return values


# The largest networks run in the whole suite only.
SLOW = {"mobilenetv2", "mobilenetv2_cifar", "resnet18", "resnet50"}


@pytest.mark.parametrize(("name", "shape", "cfg"), cases(CASES, SLOW))
def test_the_exported_masked_network_gives_the_jax_logits(name, shape, cfg):
    network, params, stats = random_network(name, shape, **cfg)
    params, mask = half_pruned(params)
    model = to_onnx(network, params, stats)

    x = np.asarray(jax.random.normal(jax.random.key(1), (3, *shape)), np.float32)
    (got,) = onnx_session(model).run(None, {"input": x})
    assert_close(got, jax_logits(network, params, stats, x))

    # The pruned weights are exactly 0.0 in the file's weights, where BatchNorm scaled them.
    for path, alive in flatten(mask).items():
        if path.endswith("kernel"):
            kernel = onnx_kernel(model, path)
            assert kernel.shape == alive.shape
            assert np.all(kernel[~alive] == 0.0)
            assert np.all(kernel[alive] != 0.0)


def test_the_file_runs_at_any_batch_size_with_transposes_only_at_the_ends(tmp_path):
    network, params, stats = random_network("resnet20", CIFAR, width=4)
    path = tmp_path / "model.onnx"
    size = export_onnx(network, params, stats, path)
    assert size == path.stat().st_size
    session = onnxruntime.InferenceSession(str(path))
    for batch in (1, 5):
        x = np.asarray(jax.random.normal(jax.random.key(batch), (batch, *CIFAR)), np.float32)
        (got,) = session.run(None, {"input": x})
        assert got.shape == (batch, 10)
        assert_close(got, jax_logits(network, params, stats, x))
    ops = [node.op_type for node in onnx.load(path).graph.node]
    # NHWC in, NCHW through every convolution, back once before the classifier.
    assert ops.count("Conv") == 21 and ops.count("Transpose") == 1
    assert "BatchNormalization" not in ops and "Sub" not in ops  # folded into the Conv


def test_a_compacted_structured_resnet20_exports_with_its_smaller_shapes():
    network, params, stats = random_network("resnet20", CIFAR, width=8)
    mask = structured_prune(params, full_mask(params), 0.5)
    small, small_params, small_stats = compact(network, params, stats, mask)
    model = to_onnx(small, small_params, small_stats)

    x = np.asarray(jax.random.normal(jax.random.key(2), (4, *CIFAR)), np.float32)
    (got,) = onnx_session(model).run(None, {"input": x})
    assert_close(got, jax_logits(network, apply_mask(params, mask), stats, x))
    # Every kernel is in the file with its compacted shape, smaller than the dense one.
    dense, compacted = flatten(params), flatten(small_params)
    kernels = [path for path in compacted if path.endswith("kernel")]
    assert all(onnx_kernel(model, p).shape == compacted[p].shape for p in kernels)
    assert sum(compacted[p].size for p in kernels) < sum(dense[p].size for p in kernels)


def test_a_block_pruned_resnet20_exports_shallower():
    network, params, stats = random_network("resnet20", CIFAR, width=4)
    mask = block_prune(params, full_mask(params), 0.5)
    small, small_params, small_stats = compact(network, params, stats, mask)
    assert small.module.removed
    model = to_onnx(small, small_params, small_stats)

    x = np.asarray(jax.random.normal(jax.random.key(4), (3, *CIFAR)), np.float32)
    (got,) = onnx_session(model).run(None, {"input": x})
    assert_close(got, jax_logits(network, apply_mask(params, mask), stats, x))
    # Two convolutions fewer in the file for each block gone.
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 21 - 2 * len(small.module.removed)


class Sorting(nn.Module):
    """A model of one's own with a layer ONNX export does not know (a sort)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="features")(x)
        return nn.Dense(3, name="head")(jnp.sort(x, axis=-1))


def test_an_unknown_primitive_is_one_line_naming_it_and_the_layer():
    network = Network(Sorting(), (5,))
    params, stats = network.init(jax.random.key(0))
    with pytest.raises(ConfigError) as caught:
        to_onnx(network, params, stats)
    message = str(caught.value)
    assert "\n" not in message
    assert "'sort'" in message and "Sorting" in message and "test_onnx_export.py" in message


def test_int8_qdq_keeps_pruned_weights_zero_and_qwix_top1():
    network, params, stats = random_network("lenet_300_100", (28, 28, 1))
    params, mask = half_pruned(params)
    quantized = quantize(network, params, stats, "int8")
    model = to_onnx(network, params, stats, quantized=quantized)

    # A "test set" of 512 random images: the file's top-1 is Qwix's int8 network's.
    x = np.asarray(jax.random.normal(jax.random.key(4), (512, 28, 28, 1)), np.float32)
    (got,) = onnx_session(model).run(None, {"input": x})
    expected = np.asarray(quantized.forward(x))
    assert_close(got, expected)
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.995

    # The kernels are int8 initializers, 0 wherever the weight was pruned.
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for path, alive in flatten(mask).items():
        if path.endswith("kernel"):
            values = initializers[path]
            assert values.dtype == np.int8
            np.testing.assert_array_equal(values, quantized.int8[path])
            assert np.all(values[~alive] == 0)
    assert "DequantizeLinear" in [node.op_type for node in model.graph.node]


def test_onnxruntime_latency_is_measured_single_threaded_and_on_all_threads():
    network, params, stats = random_network("conv2", CIFAR, width=4)
    model = to_onnx(network, params, stats)
    for threads in (1, None):
        seconds = onnx_latency(model, CIFAR, 8, threads, repeats=3)
        assert 0 < seconds < 1
