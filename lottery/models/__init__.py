"""Flax Linen networks by name. Models know nothing about masks."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from lottery.config import ConfigError, ModelConfig
from lottery.models.init import kernel_init
from lottery.models.mlp import MLP
from lottery.models.network import BatchStats, Network, Params

Builder = Callable[[ModelConfig, int], nn.Module]

# name -> builder(cfg, num_classes)
MODELS: dict[str, Builder] = {
    "mlp": lambda cfg, n: MLP(tuple(cfg.hidden), n, kernel_init(cfg.init)),
    "lenet_300_100": lambda cfg, n: MLP((300, 100), n, kernel_init(cfg.init)),
}


def check_name(name: str) -> None:
    """Fail with one line if ``name`` is not a known model."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Network:
    """The network ``cfg`` names, for inputs of ``input_shape`` (without the batch axis)."""
    check_name(cfg.name)
    kernel_init(cfg.init)  # fail early on an unknown initialiser
    return Network(MODELS[cfg.name](cfg, num_classes), tuple(input_shape))


__all__ = ["MODELS", "BatchStats", "Network", "Params", "build", "check_name"]
