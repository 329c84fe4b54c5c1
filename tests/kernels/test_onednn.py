"""oneDNN's forward convolution through XLA's custom call (lottery.kernels.onednn) and the
training convolution built on it (convolution.trained_conv): the same outputs and gradients
as XLA's convolution, in every layout the networks use, and XLA's own convolution wherever
the custom call cannot run."""

from __future__ import annotations

import platform
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lottery.kernels import convolution, onednn

# This project's CI and development machines: x86-64 Linux, where the custom call must run
# (a silent fallback to XLA would pass every equality test and lose the speed).
X86_LINUX = platform.system() == "Linux" and platform.machine() == "x86_64"

# (batch, height, width, C_in, C_out, kernel (h, w), strides, padding): ResNet-20's stem,
# 3x3 layer, stride-2 layer and 1x1 shortcut, the 2x2 convolution inside the stride-2 input
# gradient, and odd shapes (non-square maps and kernels, uneven padding).
CASES = [
    (4, 16, 16, 3, 8, (3, 3), (1, 1), ((1, 1), (1, 1))),
    (4, 16, 16, 8, 8, (3, 3), (1, 1), ((1, 1), (1, 1))),
    (4, 16, 16, 8, 16, (3, 3), (2, 2), ((1, 1), (1, 1))),
    (4, 16, 16, 8, 16, (1, 1), (2, 2), ((0, 0), (0, 0))),
    (4, 8, 8, 16, 32, (2, 2), (1, 1), ((0, 1), (0, 1))),
    (3, 9, 12, 5, 7, (1, 3), (1, 1), ((0, 0), (2, 1))),
    (2, 11, 7, 6, 4, (3, 2), (2, 1), ((1, 0), (0, 0))),
]
IDS = ["stem", "3x3", "3x3_stride2", "1x1_stride2", "2x2_polyphase", "1x3_uneven", "3x2_strided"]


def operands(case: tuple, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    n, h, w, c_in, c_out, kernel, _, _ = case
    kx, kw = jax.random.split(jax.random.key(seed))
    return (
        jax.random.normal(kx, (n, h, w, c_in), jnp.float32),
        jax.random.normal(kw, (*kernel, c_in, c_out), jnp.float32),
    )


def xla_conv(x: jax.Array, w: jax.Array, strides: tuple, padding: tuple) -> jax.Array:
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=onednn.NHWC)


def assert_close(ours: jax.Array, theirs: jax.Array) -> None:
    """Equal to float32 rounding: the two libraries sum the products in different orders."""
    scale = float(jnp.max(jnp.abs(theirs)))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_convolution_equals_xla_and_runs_in_onednn(case: tuple) -> None:
    x, w = operands(case)
    strides, padding = case[6], case[7]
    conv = jax.jit(lambda x, w: onednn.convolution(x, w, strides, padding))
    text = conv.lower(x, w).as_text()
    assert ("__onednn$convolution" in text) == X86_LINUX
    assert onednn.usable(x, w) == X86_LINUX
    ours, theirs = conv(x, w), xla_conv(x, w, strides, padding)
    assert ours.shape == theirs.shape
    assert_close(ours, theirs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trained_conv_gradients_equal_xla(case: tuple) -> None:
    """cpu_conv with the kernels on: oneDNN's forward pass and stride-1 input gradient, the
    parity split for a 3x3 stride-2 one, XLA's kernel gradient."""
    x, w = operands(case)
    strides, padding = case[6], case[7]
    probe = jax.random.normal(jax.random.key(7), xla_conv(x, w, strides, padding).shape)

    def objective(conv):
        return jax.jit(jax.value_and_grad(
            lambda x, w: jnp.sum(conv(x, w, strides, padding) * probe), argnums=(0, 1)
        ))

    def ours(x, w, strides, padding):  # as nn.Conv calls it
        return convolution.cpu_conv(
            x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), train=True
        )

    value, (dx, dw) = objective(ours)(x, w)
    text = jax.jit(ours, static_argnums=(2, 3)).lower(x, w, strides, padding).as_text()
    assert ("__onednn$convolution" in text) == X86_LINUX
    value_xla, (dx_xla, dw_xla) = objective(xla_conv)(x, w)
    np.testing.assert_allclose(float(value), float(value_xla), rtol=1e-5)
    assert_close(dx, dx_xla)
    assert_close(dw, dw_xla)


# A 3x3 layer, a stride-2 one (the output gradient dilated) and a 1x1 stride-2 shortcut
# (its input gradient autodiff's): each kind of kernel gradient the networks take.
LOOP_CASES, LOOP_IDS = CASES[1:4], IDS[1:4]


@pytest.mark.parametrize("case", LOOP_CASES, ids=LOOP_IDS)
def test_gradients_inside_a_loop_keep_eigens_layout(case: tuple) -> None:
    """Inside a ``lax.scan`` XLA's CPU backend does not lay autodiff's kernel-gradient
    convolution out for Eigen (it compiled to ``f01b_i01o->01bf`` and ran as plain loops,
    100x slower). trained_conv's gradients in a loop, as fused train steps take them, are
    convolutions with batch-major, feature-minor inputs and outputs (``b01f_01..->b01f``),
    and equal two steps taken apart."""
    x, w = operands(case)
    strides, padding = case[6], case[7]

    def step(carry, _=None):
        x, w = carry
        dx, dw = jax.grad(lambda x, w: jnp.sum(convolution.cpu_conv(
            x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), train=True) ** 2),
            argnums=(0, 1))(x, w)
        return (x - 1e-3 * dx, w - 1e-3 * dw), None

    def two_steps(x, w):
        return jax.lax.scan(step, (x, w), length=2)[0]

    compiled = jax.jit(two_steps).lower(x, w).compile()
    one = jax.jit(step)
    apart = one(one((x, w))[0])[0]
    text = compiled.as_text()
    assert " while(" in text
    labels = re.findall(r"= f32\[[^\]]*\][^ ]* convolution\(.*?dim_labels=([\w>-]+)", text)
    assert labels, "no convolution left to check"
    for label in labels:
        assert re.fullmatch(r"b01f_01(io|oi)->b01f", label), (label, text)
    fused = compiled(x, w)
    for ours, theirs in zip(fused, apart, strict=True):
        assert_close(ours, theirs)


def test_kernel_gradient_for_a_gpu_is_xlas_own() -> None:
    """kernel_gradient's explicit transposes are the CPU's layout; a program lowered for a
    GPU takes autodiff's form of the kernel gradient, as benchmarks/conv_gpu.py measured."""
    case = CASES[2]  # 3x3 stride 2: trained_conv on every platform (the parity split)
    x, w = operands(case)
    strides, padding = case[6], case[7]

    def loss(x, w):
        return jnp.sum(convolution.cpu_conv(
            x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), train=True) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=1))
    cpu = grad.trace(x, w).lower(lowering_platforms=("cpu",)).as_text()
    gpu = grad.trace(x, w).lower(lowering_platforms=("cuda",)).as_text()
    # kernel_gradient transposes the input, the output gradient and the result.
    assert cpu.count("stablehlo.transpose") >= gpu.count("stablehlo.transpose") + 3
    assert "__onednn" not in gpu


def test_other_platforms_dtypes_and_vmap_get_xla_convolution() -> None:
    case = CASES[1]
    x, w = operands(case)
    strides, padding = case[6], case[7]

    def conv(x, w):
        return onednn.convolution(x, w, strides, padding)

    # On a GPU the same primitive lowers to XLA's convolution.
    gpu = jax.jit(conv).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()
    assert "__onednn" not in gpu and "stablehlo.convolution" in gpu
    # bfloat16 stays XLA's (oneDNN would need AVX-512 for it).
    low = (x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    assert not onednn.usable(*low)
    assert "__onednn" not in jax.jit(conv).lower(*low).as_text()
    # vmap maps XLA's convolution, with the same result.
    xs = jnp.stack([x, 2 * x])
    mapped = jax.jit(jax.vmap(conv, in_axes=(0, None)))(xs, w)
    assert_close(mapped[1], xla_conv(2 * x, w, strides, padding))


def test_no_cpu_backend_means_no_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    """With JAX_PLATFORMS=cuda there is no CPU backend to ask: XLA's convolution, no crash."""

    def no_cpu(*args, **kwargs):
        raise RuntimeError("Unknown backend cpu")

    monkeypatch.setattr(jax, "devices", no_cpu)
    onednn._runtime_has_onednn.cache_clear()
    try:
        assert not onednn.usable(*operands(CASES[1]))
    finally:
        monkeypatch.undo()
        onednn._runtime_has_onednn.cache_clear()
    assert onednn.usable(*operands(CASES[1])) == X86_LINUX
