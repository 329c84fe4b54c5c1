"""Kernel initialisers by name, untruncated as PyTorch's ``kaiming_normal_``/``xavier_normal_``.

(``jax.nn.initializers.he_normal`` and ``glorot_normal`` draw from a *truncated* normal; the
papers' code, OpenLTH included, draws from a plain one, which we follow.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.nn import initializers

from lottery.config import ConfigError

try:  # jax 0.11 and later: sqrt(2)·stddev·erfinv(u), rounded otherwise than normal(u)·stddev
    from jax._src.nn.initializers import _scaled_normal
except ImportError:  # jax 0.10: random.normal(key, shape) * stddev
    _scaled_normal = None


def variance_scaling_normal(scale: float, mode: str) -> initializers.Initializer:
    """``jax.nn.initializers.variance_scaling(scale, mode, "normal")``, bit for bit, drawing
    its normal numbers for the kernel's size and then shaping them.

    Why not JAX's own: XLA's CPU backend compiles the random-number program of a 4-D shape
    in 0.6-3 s, of a 1-D one in 0.25 s, so every new conv kernel shape cost seconds of start-up
    (ResNet-20's initialisation took about 10 s). JAX's threefry draws for a shape are those
    for its row-major flattening (checked with ``jax_threefry_partitionable`` on and off), so
    the numbers are the same: ``tests/models/test_models.py`` compares both initialisers with JAX's
    bit for bit on 2-, 3- and 4-D kernel shapes. The scaling is JAX's own function where it
    has one (jax 0.11 and later changed how it rounds: a private name, found or not at
    import, so an installation always draws what its ``variance_scaling`` draws).
    """
    if mode not in ("fan_in", "fan_avg"):
        raise ValueError(f"mode {mode!r}: fan_in or fan_avg")

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        in_size, out_size = shape[-2], shape[-1]  # JAX's default in_axis and out_axis
        receptive_field_size = math.prod(shape) / in_size / out_size
        fan_in, fan_out = in_size * receptive_field_size, out_size * receptive_field_size
        denominator = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
        variance = jnp.array(scale / denominator, dtype=dtype)
        flat, stddev = (math.prod(shape),), jnp.sqrt(variance)
        if _scaled_normal is not None:
            return _scaled_normal(key, flat, dtype, stddev).reshape(shape)
        return jax.random.normal(key, flat, dtype).reshape(shape) * stddev

    return init


INITIALIZERS = {
    "kaiming_normal": variance_scaling_normal(2.0, "fan_in"),
    "glorot_normal": variance_scaling_normal(1.0, "fan_avg"),
}


BATCHNORM_INITS = ("ones", "uniform")
BIAS_INITS = ("zeros", "pytorch")


def reinit_function(batchnorm_init: str, bias_init: str) -> Callable | None:
    """``reinit(key, params) -> params`` redrawing BatchNorm scales and layer biases as
    OpenLTH does, or None when both stay Flax's (scales 1, biases 0).

    ``batchnorm_init="uniform"``: BatchNorm scales from U[0, 1) (OpenLTH's
    ``batchnorm_init='uniform'``; shifts stay 0). ``bias_init="pytorch"``: the biases of dense
    and convolutional layers from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default, which
    OpenLTH keeps (it re-initialises only the weights).
    """
    if batchnorm_init not in BATCHNORM_INITS:
        raise ConfigError(
            f"unknown model.batchnorm_init {batchnorm_init!r}; choose one of "
            f"{', '.join(BATCHNORM_INITS)}"
        )
    if bias_init not in BIAS_INITS:
        raise ConfigError(
            f"unknown model.bias_init {bias_init!r}; choose one of {', '.join(BIAS_INITS)}"
        )
    if batchnorm_init == "ones" and bias_init == "zeros":
        return None

    def reinit(key: jax.Array, params: Any) -> Any:
        flat = traverse_util.flatten_dict(params, sep="/")
        for index, path in enumerate(sorted(flat)):
            layer, _, leaf = path.rpartition("/")
            sub = jax.random.fold_in(key, index)
            value = flat[path]
            if leaf == "scale" and batchnorm_init == "uniform":
                flat[path] = jax.random.uniform(sub, value.shape, value.dtype)
            elif leaf == "bias" and bias_init == "pytorch" and f"{layer}/kernel" in flat:
                kernel = flat[f"{layer}/kernel"]
                bound = 1.0 / math.sqrt(math.prod(kernel.shape[:-1]))
                flat[path] = jax.random.uniform(sub, value.shape, value.dtype, -bound, bound)
        return traverse_util.unflatten_dict(flat, sep="/")

    return reinit


def kernel_init(name: str) -> initializers.Initializer:
    """The initialiser called ``name``."""
    if name not in INITIALIZERS:
        raise ConfigError(
            f"unknown model.init {name!r}; choose one of {', '.join(sorted(INITIALIZERS))}"
        )
    return INITIALIZERS[name]
