"""Kernel initialisers by name, untruncated as PyTorch's ``kaiming_normal_``/``xavier_normal_``.

(``jax.nn.initializers.he_normal`` and ``glorot_normal`` draw from a *truncated* normal; the
papers' code, OpenLTH included, draws from a plain one, which we follow.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from flax import traverse_util
from jax.nn import initializers

from lottery.config import ConfigError

INITIALIZERS = {
    "kaiming_normal": initializers.variance_scaling(2.0, "fan_in", "normal"),
    "glorot_normal": initializers.variance_scaling(1.0, "fan_avg", "normal"),
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
