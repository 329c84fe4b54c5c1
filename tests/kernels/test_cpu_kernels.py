"""The CPU training kernels (lottery.kernels.layers and the modules it builds on) and the XLA
flag that lottery.use_cpu_settings sets: the same logits, gradients and BatchNorm statistics
as Flax's layers, pruned weights +0.0; each network trains on the kernels it was built with."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lottery.config import ConfigError, ModelConfig, OptimizerConfig
from lottery.kernels import convolution, layers, normalization, pooling
from lottery.kernels.xla_cpu import EIGEN_CONVOLUTIONS
from lottery.models import Network, build, uses_cpu_kernels
from lottery.models.resnet_cifar import CifarResNet
from lottery.train.optim import make_optimizer, make_schedule
from lottery.train.state import TrainState
from lottery.train.steps import make_step

IMAGE = (16, 16, 3)  # small images: the three stages still see 16, 8 and 4 pixels


# Conv-2 on 2x2 images: both convolutions on maps smaller than their 3x3 kernels, as VGG's
# last ones (small_map_conv), at a fraction of VGG's compile time.
TINY = (2, 2, 3)


@functools.cache
def both(name: str, width: int, image: tuple[int, ...] = IMAGE) -> tuple:
    """The network with Flax's layers and with the CPU kernels, and shared initial weights.

    ``resnet8``: the smallest CIFAR ResNet (one basic block per stage), built directly.
    Cached: initialising a ResNet takes seconds.
    """
    if name == "resnet8":
        network = Network(CifarResNet(8, 10, width), image)
    else:
        network = build(ModelConfig(name=name, width=width, kernels="xla"), image, 10)
    params, stats = network.init(jax.random.key(0))
    return network, network.with_kernels("cpu"), params, stats


def loss_and_grads(network, params, stats, x, y):
    """Loss, logits, new statistics and gradients, and the program's StableHLO text."""

    def loss(params):
        logits, new_stats = network.apply(params, stats, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (
            logits,
            new_stats,
        )

    lowered = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params)
    (value, (logits, new_stats)), grads = lowered.compile()(params)
    return value, logits, new_stats, grads, lowered.as_text()


def assert_trees_close(a, b, rtol: float, atol: float) -> None:
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    for (path, left), right in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(
            np.asarray(left), np.asarray(right), rtol=rtol, atol=atol,
            err_msg=jax.tree_util.keystr(path),
        )


@pytest.mark.parametrize(
    ("name", "width", "image"),
    [  # ResNet-8 compiles for seconds: the whole suite only
        pytest.param("resnet8", 8, IMAGE, id="resnet8", marks=pytest.mark.slow),
        pytest.param("conv2", 16, IMAGE, id="conv2"),
        pytest.param("conv2", 4, TINY, id="conv2_on_2x2_maps"),
    ],
)
def test_logits_gradients_and_statistics_equal_flax_layers(
    name: str, width: int, image: tuple[int, ...]
) -> None:
    """Maps smaller than the kernel (TINY) use small_map_conv, also when evaluating;
    everything else evaluates with Flax's layers, bit for bit."""
    plain, fast, params, stats = both(name, width, image)
    x = jax.random.normal(jax.random.key(1), (48, *image))
    y = jax.random.randint(jax.random.key(2), (48,), 0, 10)
    loss_p, logits_p, stats_p, grads_p, plain_text = loss_and_grads(plain, params, stats, x, y)
    loss_f, logits_f, stats_f, grads_f, fast_text = loss_and_grads(fast, params, stats, x, y)
    np.testing.assert_allclose(logits_f, logits_p, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(loss_f, loss_p, rtol=1e-5)
    # BatchNorm's sums in two stages, another order: equal to float32 rounding.
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_p))
    assert_trees_close(grads_f, grads_p, rtol=1e-3, atol=1e-5 * scale)
    assert_trees_close(stats_f, stats_p, rtol=1e-4, atol=1e-6)
    eval_p, _ = jax.jit(plain.apply, static_argnames="train")(params, stats, x, train=False)
    eval_f, _ = jax.jit(fast.apply, static_argnames="train")(params, stats, x, train=False)
    if image == TINY:
        np.testing.assert_allclose(eval_f, eval_p, rtol=1e-4, atol=1e-4)
        # One matrix product per convolution, forward (no convolution left).
        assert "convolution" not in fast_text and "convolution" in plain_text
    else:
        np.testing.assert_array_equal(eval_f, eval_p)
    if name == "resnet8":
        assert_the_fast_path_runs(plain_text, fast_text)


def assert_the_fast_path_runs(plain_text: str, fast_text: str) -> None:
    """The CPU kernels change ResNet-8's program (48 examples of 16x16, width 8)."""
    # BatchNorm's first stage sums blocks of 32 rows: 48 x 16 x 16 rows of 8 channels.
    blocks = "tensor<384x32x8xf32>"
    assert blocks in fast_text and blocks not in plain_text
    # The stride-2 convolutions' input gradients: 2x2 kernels giving four parities at once.
    for polyphase in ("tensor<2x2x16x32xf32>", "tensor<2x2x32x64xf32>"):
        assert polyphase in fast_text and polyphase not in plain_text
    # Block outputs stored once (materialize): divided by a 1 behind a barrier.
    assert "optimization_barrier" in fast_text and "optimization_barrier" not in plain_text


def train_step_text(network, params, stats, x) -> str:
    """The StableHLO of a gradient through the module itself (not Network.apply)."""

    def loss(params):
        logits, _ = network.module.apply(
            {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(logits)

    return jax.jit(jax.grad(loss)).lower(params).as_text()


def test_each_network_trains_on_the_kernels_it_was_built_with() -> None:
    """The choice is the module's, made by build (model.kernels), not a setting of the
    process or thread: built one after the other and traced interleaved, each network keeps
    its own kernels (the CPU max-pool gradient is elementwise, Flax's a select_and_scatter),
    with the same parameter tree."""
    cpu = build(ModelConfig(name="conv2", width=4, kernels="cpu"), TINY, 10)
    xla = build(ModelConfig(name="conv2", width=4, kernels="xla"), TINY, 10)  # built last
    assert (cpu.kernels, xla.kernels) == ("cpu", "xla")
    params, stats = xla.init(jax.random.key(0))
    assert jax.tree.structure(cpu.init(jax.random.key(0))) == jax.tree.structure((params, stats))
    x = jnp.zeros((2, *TINY))
    texts = [train_step_text(net, params, stats, x) for net in (cpu, xla, cpu, xla)]
    assert ["select_and_scatter" in text for text in texts] == [False, True, False, True]
    assert cpu.with_kernels("xla").kernels == "xla" and xla.with_kernels("xla") is xla


def test_a_choice_that_is_neither_kernel_fails() -> None:
    with pytest.raises(ValueError, match="kernels must be one of xla, cpu, not 'CPU'"):
        layers.conv_layer(4, (3, 3), kernels="CPU", train=True)


@pytest.mark.parametrize("shape", [(4, 8, 8, 3, 5), (2, 12, 6, 4, 2)])
def test_stride2_input_gradient_equals_xla_at_small_batches(shape: tuple[int, ...]) -> None:
    """The parity split of the input gradient at batches of 2 and 4 (odd widths of the output
    gradient's rows included): the same values as XLA's, and in the program."""
    n, height, width, c_in, c_out = shape
    x = jax.random.normal(jax.random.key(7), (n, height, width, c_in))
    w = jax.random.normal(jax.random.key(8), (3, 3, c_in, c_out))
    settings = {"window_strides": (2, 2), "padding": ((1, 1), (1, 1)),
                "dimension_numbers": ("NHWC", "HWIO", "NHWC")}

    def xla(x, w):
        return jax.lax.conv_general_dilated(x, w, **settings)

    def ours(x, w):
        return convolution.cpu_conv(x, w, **settings, train=True)

    y, vjp = jax.vjp(xla, x, w)
    g = jax.random.normal(jax.random.key(9), y.shape)
    y_ours, vjp_ours = jax.vjp(ours, x, w)
    program = jax.jit(lambda x, w, g: jax.vjp(ours, x, w)[1](g)).lower(x, w, g).as_text()
    np.testing.assert_array_equal(y_ours, y)
    for ours_grad, xla_grad in zip(vjp_ours(g), vjp(g), strict=True):
        np.testing.assert_allclose(ours_grad, xla_grad, rtol=1e-5, atol=1e-5)
    # The parity kernel: (2, 2, C_out, 4 C_in).
    assert f"tensor<2x2x{c_out}x{4 * c_in}xf32>" in program


@pytest.mark.parametrize(("side", "padding"), [(2, (1, 1)), (1, (1, 1)), (2, (2, 0))])
def test_small_map_conv_and_its_gradients_equal_xla(side: int, padding: tuple) -> None:
    x = jax.random.normal(jax.random.key(12), (5, side, side, 6))
    w = jax.random.normal(jax.random.key(13), (3, 3, 6, 7))
    pads = (padding, padding)

    def xla(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def ours(x, w):
        return convolution.small_map_conv(x, w, pads)

    y_xla, vjp_xla = jax.vjp(xla, x, w)
    y_ours, vjp_ours = jax.vjp(ours, x, w)
    np.testing.assert_allclose(y_ours, y_xla, rtol=1e-5, atol=1e-5)
    g = jax.random.normal(jax.random.key(14), y_xla.shape)
    for a, b in zip(vjp_ours(g), vjp_xla(g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_max_pool_and_its_gradient_equal_flax_even_with_ties() -> None:
    """Ties (ReLU's zeros, repeated values) send the gradient to the window's first maximum."""
    x = jnp.round(jax.random.normal(jax.random.key(10), (3, 8, 6, 5)) * 1.5)
    x = jnp.maximum(x, 0.0).at[0, 0:2, 0:2, 0].set(2.0)
    g = jax.random.normal(jax.random.key(11), (3, 4, 3, 5))
    flax_y, flax_vjp = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
    ours_y, ours_vjp = jax.vjp(pooling.max_pool_2x2, x)
    np.testing.assert_array_equal(ours_y, flax_y)
    np.testing.assert_array_equal(ours_vjp(g)[0], flax_vjp(g)[0])


def test_materialize_is_the_identity_bit_for_bit() -> None:
    """On normal floats: XLA's CPU arithmetic flushes denormals to zero, the division as the
    add and ReLU before it (so what reaches it is never denormal)."""
    x = jnp.array([0.0, -0.0, 1.2e-38, -3.5, jnp.inf, 7e30, 1 / 3], jnp.float32)
    materialize = functools.partial(layers.materialize, kernels="cpu", train=True)
    y, vjp = jax.jit(lambda x: jax.vjp(materialize, x))(x)
    assert "optimization_barrier" in jax.jit(materialize).lower(x).as_text()
    np.testing.assert_array_equal(np.asarray(y).view(np.uint32), np.asarray(x).view(np.uint32))
    np.testing.assert_array_equal(vjp(x)[0], x)


@pytest.mark.slow
def test_pruned_weights_stay_positive_zero() -> None:
    _, fast, params, stats = both("conv2", 8)
    mask = jax.tree.map(
        lambda p: jax.random.bernoulli(jax.random.key(p.size), 0.5, p.shape), params
    )
    opt = OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    tx = make_optimizer(opt)
    step = jax.jit(make_step(fast, tx, make_schedule(opt, 10, 100)))
    state = TrainState.create(0, params, stats, tx)
    x = jax.random.normal(jax.random.key(3), (32, *IMAGE))
    y = jax.random.randint(jax.random.key(4), (32,), 0, 10)
    for _ in range(3):
        state, loss = step(state, mask, x, y, jax.random.key(5))
    assert np.isfinite(float(loss))
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mask), strict=True):
        pruned = np.asarray(p)[~np.asarray(m)]
        assert np.all(pruned == 0) and not np.any(np.signbit(pruned))
        assert np.any(np.asarray(p)[np.asarray(m)] != 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batchnorm_closed_form_gradient_equals_flax(dtype) -> None:
    """The closed-form backward against autodiff through Flax's BatchNorm: the input's
    gradient (which reaches it also through the batch mean and variance), scale's and
    bias's, on channels with an offset mean and on a constant (fully pruned) channel."""
    x = jax.random.normal(jax.random.key(7), (32, 6, 6, 5)) * jnp.array([1, 3, 0.2, 1, 0])
    x = (x + jnp.array([0.5, -2, 4, 0, 0])).astype(dtype)
    probe = jax.random.normal(jax.random.key(8), x.shape)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    ours = normalization.BlockSumBatchNorm(use_running_average=False)
    variables = flax_bn.init(jax.random.key(0), x)
    params = {
        "scale": jnp.array([1.0, 0.5, 2.0, -1.0, 1.5]),
        "bias": jnp.array([0.0, 0.1, -0.3, 0.2, 0.4]),
    }

    def loss(module, params, x):
        y, _ = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            mutable=["batch_stats"],
        )
        return jnp.sum(y.astype(jnp.float32) * probe)

    expected = jax.grad(functools.partial(loss, flax_bn), argnums=(0, 1))(params, x)
    got = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1)))(params, x)
    tolerance = 1e-4 if dtype == jnp.float32 else 3e-2
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tolerance, atol=tolerance
        )


def test_batchnorm_in_bfloat16_matches_flax() -> None:
    """Mixed precision: statistics in float32, output in the input's dtype, as Flax's."""
    x = jax.random.normal(jax.random.key(6), (16, 8, 8, 4)).astype(jnp.bfloat16) * 3 + 1
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    ours = normalization.BlockSumBatchNorm(use_running_average=False)
    variables = flax_bn.init(jax.random.key(0), x)
    variables = {
        "params": jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables["params"]),
        "batch_stats": variables["batch_stats"],
    }
    y_flax, s_flax = flax_bn.apply(variables, x, mutable=["batch_stats"])
    y_ours, s_ours = ours.apply(variables, x, mutable=["batch_stats"])
    assert y_ours.dtype == y_flax.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y_ours, np.float32), np.asarray(y_flax, np.float32), rtol=2e-2, atol=2e-2
    )
    assert_trees_close(s_ours, s_flax, rtol=1e-5, atol=1e-6)


def test_auto_means_cpu_kernels_on_a_cpu_and_a_gpu() -> None:
    assert uses_cpu_kernels("auto", "cpu") and uses_cpu_kernels("auto", "gpu")
    assert not uses_cpu_kernels("auto", "tpu")
    assert uses_cpu_kernels("cpu", "gpu") and not uses_cpu_kernels("xla", "cpu")
    with pytest.raises(ConfigError, match=r"model.kernels='fast'.*auto, xla, cpu"):
        uses_cpu_kernels("fast")


PROBE = """
import json, os, lottery, jax, jax.numpy as jnp
lottery.use_cpu_settings()
from jax import lax
conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=1))
text = grad.lower(jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "ynn": "__ynn_fusion" in text}))
"""


def probe(xla_flags: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_settings_keep_convolutions_out_of_ynnpack_unless_told_otherwise() -> None:
    default = probe(None)
    assert EIGEN_CONVOLUTIONS in default["flags"] and not default["ynn"]
    # The user's own setting wins, and then YNNPACK takes the convolutions again.
    own = probe("--xla_cpu_experimental_ynn_fusion_type=individual_convolution")
    assert EIGEN_CONVOLUTIONS not in own["flags"] and own["ynn"]
