"""``pruning.method=nm``: N:M structured sparsity (2:4 by default, the pattern sparse tensor
cores run): of every ``M`` consecutive weights along a kernel's input dimension (one output
unit's; for a Conv kernel ``(kh, kw, in, out)``, ``M`` consecutive input channels at each
``(kh, kw, out)``), the ``N`` of largest ``|w|`` stay, ties to the lower input index.

One shot (``pruning.levels=1``, the default): level 1 from the dense network's trained
weights. Gradually (``pruning.levels=K``, at most ``M - N``): level ``l`` keeps
``n_l = M - round(l (M - N) / K)`` of every ``M`` (4:4, 3:4, 2:4 for 2:4 in two levels),
chosen among the weights level ``l - 1`` kept from its trained weights, then rewound and
retrained as IMP's levels are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import PruneInputs, Strategy, Timeline
from lottery.pruning.magnitude import prune_count
from lottery.pruning.mask import Mask, flatten, unflatten

KEYS = frozenset({"nm_n", "nm_m"})
KERNEL_RANKS = (2, 4)  # Dense (in, out) and Conv (kh, kw, in, out) kernels


@dataclass(frozen=True)
class NMSettings:
    """Keep ``n`` of every ``m`` consecutive input weights."""

    n: int
    m: int
    levels: int = 1

    def kept_at(self, level: int) -> int:
        """``n_l``: how many of every ``m`` level ``level`` keeps (``n`` at the last)."""
        return self.m - prune_count(level / self.levels, self.m - self.n)


def settings(cfg: PruningConfig, timeline: Timeline | None) -> NMSettings:
    if not 1 <= cfg.nm_n < cfg.nm_m:
        raise ConfigError(
            f"pruning.nm_n={cfg.nm_n} and pruning.nm_m={cfg.nm_m} must satisfy 1 <= nm_n < "
            "nm_m (2:4 is nm_n=2 nm_m=4)"
        )
    if not 1 <= cfg.levels <= cfg.nm_m - cfg.nm_n:
        raise ConfigError(
            f"pruning.levels={cfg.levels} does not fit pruning.method=nm at {cfg.nm_n}:"
            f"{cfg.nm_m}, whose levels each keep at least one fewer of every {cfg.nm_m}; "
            f"choose 1 (one shot) to {cfg.nm_m - cfg.nm_n} levels"
        )
    return NMSettings(cfg.nm_n, cfg.nm_m, cfg.levels)


def check(params: Any, prunable: list[str], s: NMSettings) -> None:
    """One ConfigError line for a prunable leaf that is not a Dense/Conv kernel or whose input
    dimension does not split into groups of ``m``."""
    flat = flatten(params)
    for path in sorted(prunable):
        shape = np.shape(flat[path])
        if len(shape) not in KERNEL_RANKS:
            raise ConfigError(
                f"pruning.method=nm prunes Dense and Conv kernels, not {path} of shape "
                f"{shape}; leave it out with pruning.prunable"
            )
        if shape[-2] % s.m:
            raise ConfigError(
                f"pruning.method=nm: {path} has {shape[-2]} inputs, not a multiple of "
                f"pruning.nm_m={s.m}; choose another nm_m or leave the layer dense with "
                "pruning.prunable"
            )


def nm_mask(kernel: np.ndarray, n: int, m: int, alive: np.ndarray | None = None) -> np.ndarray:
    """A bool mask of ``kernel``'s shape keeping, of each ``m`` consecutive entries along
    the input axis (``-2``), the ``n`` of largest ``|w|`` (ties to the lower index), chosen
    among the ``alive`` ones (all if None; each group must have at least ``n`` alive)."""
    w = np.abs(np.asarray(kernel, dtype=np.float64))
    if alive is not None:
        w = np.where(alive, w, -1.0)  # below every |w|: never kept
    *lead, inputs, outputs = w.shape
    groups = w.reshape(*lead, inputs // m, m, outputs)
    order = np.argsort(-groups, axis=-2, kind="stable")  # largest first, ties: lower index
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n, :], True, axis=-2)
    return keep.reshape(w.shape)


def prune(inputs: PruneInputs, s: NMSettings) -> Mask:
    """Level L's N:M mask from level L-1's trained weights, within level L-1's mask."""
    weights = flatten(inputs.params)
    flat = {p: np.array(m, dtype=bool, copy=True) for p, m in flatten(inputs.mask).items()}
    for path in inputs.prunable:
        flat[path] = nm_mask(weights[path], s.kept_at(inputs.level), s.m, flat[path])
    return unflatten(flat)


STRATEGY = Strategy("nm", KEYS, settings, prune, check)
