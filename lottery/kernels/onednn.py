"""A forward convolution run by oneDNN, the library PyTorch's CPU convolutions use, through
the ``__onednn$convolution`` custom call of XLA's CPU runtime.

jaxlib's x86-64 Linux builds link oneDNN and run that custom call (XLA's own oneDNN rewrite
pass, which would emit it, is compiled out of them). On a 2-core CPU (jax 0.10.2, batch 128,
``benchmarks/conv_cpu.py``'s shapes) oneDNN's forward convolution took 1.7-1.8 ms for
ResNet-20's first 3->16 layer against Eigen's 5.6-6.7, 4.0-5.1 ms against 5.9-6.2 for its
16-channel 32x32 layers, and as long as Eigen or less elsewhere; the same call computes a
stride-1 input gradient (a convolution of the output gradient with the flipped kernel),
3.8 ms against XLA's 5.9 for the 16-channel layers. Kernel gradients stay XLA's: the
custom call only does forward propagation, and a kernel gradient posed as a forward
convolution (a 32x32 "kernel") takes oneDNN seconds.

The custom call's configuration is XLA's ``OneDnnConvolutionConfig`` in JSON, an internal
format without a stability promise; :func:`usable` therefore allows it only where a child
process has run it on this installation and found XLA's results (:data:`PROBE`, once per
jaxlib release: :mod:`lottery.kernels.probes`), and ``tests/kernels/test_onednn.py``
compares it with XLA's convolution in every layout it is used in. Other platforms lower the
same primitive to XLA's convolution.
"""

from __future__ import annotations

import functools
import json
import platform

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from lottery.kernels import probes

try:  # custom_call has no public equivalent; a JAX without it keeps XLA's convolution
    from jax._src.interpreters.mlir import custom_call
except ImportError:
    custom_call = None

# Whether this XLA's __onednn$convolution reads the configuration built below (0-based
# spatial dimensions, paddings, strides and dilations as they are: older XLA stored them
# offset by 1 or 2, and a wrong layout aborts the process inside oneDNN): a child process
# runs it with asymmetric padding and strides and compares it with XLA's convolution.
PROBE = """
import jax, numpy as np
from lottery.kernels import onednn
x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
w = jax.random.normal(jax.random.key(1), (3, 2, 3, 5))
for strides, padding in [((1, 1), ((1, 1), (0, 1))), ((2, 1), ((0, 2), (1, 0)))]:
    conv = jax.jit(lambda x, w: onednn._primitive.bind(x, w, strides=strides, padding=padding))
    assert "__onednn$convolution" in conv.lower(x, w).as_text()
    want = onednn.xla_convolution(x, w, strides=strides, padding=padding)
    np.testing.assert_allclose(conv(x, w), want, rtol=1e-4, atol=1e-4)
"""

# XLA cannot write an executable holding the custom call to JAX's persistent compilation
# cache: JAX warns once per program. The command line silences that warning in its own
# process (lottery.kernels.xla_cpu.ignore_cache_write_warning, part of lottery.use_cpu_settings);
# importing this module installs no warnings filter.

# Flax's layout: NHWC inputs and outputs, HWIO kernels.
NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))

Padding = tuple[tuple[int, int], tuple[int, int]]


@functools.cache
def _runtime_has_onednn() -> bool:
    """Whether this process's jaxlib runs the custom call (:data:`PROBE`), on a single CPU
    device.

    XLA's SPMD partitioner knows nothing of the custom call: on a batch split over several
    CPU devices (``train.data_parallel`` with ``--xla_force_host_platform_device_count``) it
    gathers the whole batch onto every device first, so there XLA's convolution stays.
    """
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if custom_call is None:
        return False
    try:
        # A program for a GPU or TPU (the default backend) keeps XLA's convolutions and
        # their autodiff forms, as benchmarks/conv_gpu.py measured them.
        if jax.default_backend() != "cpu" or len(jax.devices("cpu")) != 1:
            return False
    except RuntimeError:  # JAX_PLATFORMS=cuda: no CPU backend to ask
        return False
    return probes.passes("onednn_convolution", PROBE)


def usable(x: jax.Array, w: jax.Array) -> bool:
    """Whether :func:`convolution` runs in oneDNN for these operands: float32, and a jaxlib
    checked to run the custom call (x86-64 Linux) on one CPU device, the default backend."""
    return x.dtype == jnp.float32 and w.dtype == jnp.float32 and _runtime_has_onednn()


def _output_shape(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], strides: tuple[int, int], padding: Padding
) -> tuple[int, int, int, int]:
    sides = [
        (x_shape[1 + i] + sum(padding[i]) - w_shape[i]) // strides[i] + 1 for i in range(2)
    ]
    return (x_shape[0], sides[0], sides[1], w_shape[3])


def xla_convolution(
    x: jax.Array, w: jax.Array, *, strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """The same convolution by XLA: where oneDNN is not used, and for kernel gradients."""
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


_primitive = Primitive("onednn_convolution")
_primitive.def_impl(xla_convolution)
_primitive.def_abstract_eval(
    lambda x, w, *, strides, padding: jax.core.ShapedArray(
        _output_shape(x.shape, w.shape, strides, padding), x.dtype
    )
)


def _config(strides: tuple[int, int], padding: Padding) -> str:
    """XLA's ``BackendConfig`` with the ``OneDnnConvolutionConfig`` of an NHWC x HWIO ->
    NHWC convolution (``xla/service/cpu/onednn_config.proto``)."""
    nhwc = {"dims": 4, "data": {"batch_dim": 0, "feature_dim": 3, "spatial_dims": [1, 2]}}
    hwio = {"input_feature_dim": 2, "output_feature_dim": 3, "spatial_dims": [0, 1]}
    window = {
        "pad_left": [padding[0][0], padding[1][0]],
        "pad_right": [padding[0][1], padding[1][1]],
        "strides": list(strides),
        "window_dilations": [1, 1],
    }
    conv = {"dims": 4, "input": nhwc, "kernel": {"dims": 4, "filter": hwio}, "output": nhwc,
            "window": window, "feature_groups": 1}
    return json.dumps({"onednn_conv_config": conv})


def _lower_to_onednn(
    ctx: mlir.LoweringRuleContext,
    x: mlir.ir.Value,
    w: mlir.ir.Value,
    *,
    strides: tuple[int, int],
    padding: Padding,
) -> list[mlir.ir.Value]:
    out_type = mlir.aval_to_ir_type(ctx.module_context, ctx.avals_out[0])
    call = custom_call(
        "__onednn$convolution",
        result_types=[out_type],
        operands=[x, w],
        backend_config=_config(strides, padding),
        api_version=1,
    )
    return list(call.results)


mlir.register_lowering(_primitive, _lower_to_onednn, platform="cpu")
mlir.register_lowering(_primitive, mlir.lower_fun(xla_convolution, multiple_results=False))


def _batch(
    args: tuple[jax.Array, jax.Array], dims: tuple[int | None, int | None], **params: object
) -> tuple[jax.Array, int]:
    """Under ``vmap``: XLA's convolution, mapped (no train step maps this one)."""
    return jax.vmap(functools.partial(xla_convolution, **params), in_axes=dims)(*args), 0


batching.primitive_batchers[_primitive] = _batch


def convolution(
    x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """``lax.conv_general_dilated(x, w, strides, padding)`` for an NHWC ``x`` and an HWIO
    ``w`` without dilation or groups, run by oneDNN where :func:`usable` says so in a
    compiled program (else, and when evaluated eagerly, by XLA). It has no derivative rules
    of its own: callers give it a ``custom_vjp``."""
    strides = (int(strides[0]), int(strides[1]))
    padding = tuple((int(low), int(high)) for low, high in padding)
    # Negative padding (a crop) and an empty output are XLA's to handle or to reject: oneDNN
    # would abort the process on them.
    shape = _output_shape(x.shape, w.shape, strides, padding)
    plain = min(min(pair) for pair in padding) >= 0 and min(shape) > 0
    if not (plain and usable(x, w)):
        return xla_convolution(x, w, strides=strides, padding=padding)
    return _primitive.bind(x, w, strides=strides, padding=padding)
