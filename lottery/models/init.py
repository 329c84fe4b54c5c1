"""Kernel initialisers by name, untruncated as PyTorch's ``kaiming_normal_``/``xavier_normal_``.

(``jax.nn.initializers.he_normal`` and ``glorot_normal`` draw from a *truncated* normal; the
papers' code, OpenLTH included, draws from a plain one, which we follow.)
"""

from __future__ import annotations

from jax.nn import initializers

from lottery.config import ConfigError

INITIALIZERS = {
    "kaiming_normal": initializers.variance_scaling(2.0, "fan_in", "normal"),
    "glorot_normal": initializers.variance_scaling(1.0, "fan_avg", "normal"),
}


def kernel_init(name: str) -> initializers.Initializer:
    """The initialiser called ``name``."""
    if name not in INITIALIZERS:
        raise ConfigError(
            f"unknown model.init {name!r}; choose one of {', '.join(sorted(INITIALIZERS))}"
        )
    return INITIALIZERS[name]
