"""Pruning strategies by name: ``pruning.method`` picks one from :data:`STRATEGIES`.

A strategy turns the shared ``pruning`` config into its own typed settings (checking them,
and rejecting keys it does not read) and gives the next mask:
``prune(params, mask, prunable, settings) -> mask``. ``magnitude`` (global or layer-wise) is
the first; the families of pruning (structured, gradual, at initialisation, random) register
here the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.magnitude import magnitude_prune
from lottery.pruning.mask import Mask, full_mask

# Keys of ``pruning`` every strategy reads (what to prune, how often, where to rewind).
COMMON_KEYS = frozenset({"method", "levels", "rewind_step", "prunable"})
SCOPES = ("global", "layerwise")


@dataclass(frozen=True)
class MagnitudeSettings:
    """Remove ``fraction`` of the remaining weights of smallest magnitude per level."""

    fraction: float
    scope: str
    layer_fractions: dict[str, float]


def _magnitude_settings(cfg: PruningConfig) -> MagnitudeSettings:
    if cfg.scope not in SCOPES:
        raise ConfigError(f"unknown pruning.scope {cfg.scope!r}; choose one of {', '.join(SCOPES)}")
    return MagnitudeSettings(cfg.fraction, cfg.scope, dict(cfg.layer_fractions))


def _magnitude(params: Any, mask: Mask, prunable: list[str], s: MagnitudeSettings) -> Mask:
    return magnitude_prune(params, mask, prunable, s.scope, s.fraction, s.layer_fractions)


def _check_magnitude(params: Any, prunable: list[str], s: MagnitudeSettings) -> None:
    # Rate 0 prunes nothing (no sort of every weight) but checks layer_fractions' keys.
    magnitude_prune(params, full_mask(params), prunable, s.scope, 0.0, s.layer_fractions)


@dataclass(frozen=True)
class Strategy:
    """A pruning method: its settings from the config, and its ``prune`` function."""

    name: str
    keys: frozenset[str]  # the ``pruning`` keys it reads besides COMMON_KEYS
    settings: Callable[[PruningConfig], Any]
    prune: Callable[[Any, Mask, list[str], Any], Mask]
    # Checks the settings against the network's layers (one ConfigError line), cheaply.
    check: Callable[[Any, list[str], Any], None]


STRATEGIES: dict[str, Strategy] = {
    "magnitude": Strategy(
        "magnitude",
        frozenset({"fraction", "scope", "layer_fractions"}),
        _magnitude_settings,
        _magnitude,
        _check_magnitude,
    ),
}


def strategy_for(cfg: PruningConfig) -> tuple[Strategy, Any]:
    """The strategy ``cfg.method`` names and its checked settings, or one ConfigError line."""
    strategy = STRATEGIES.get(cfg.method)
    if strategy is None:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"unknown pruning.method {cfg.method!r}; choose one of {known}")
    defaults = PruningConfig()
    for field in dataclasses.fields(cfg):
        key = field.name
        if key in COMMON_KEYS or key in strategy.keys:
            continue
        if getattr(cfg, key) != getattr(defaults, key):
            raise ConfigError(
                f"pruning.{key}={getattr(cfg, key)!r} does not apply to pruning.method="
                f"{cfg.method!r}; remove it"
            )
    return strategy, strategy.settings(cfg)
