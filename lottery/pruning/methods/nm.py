"""``pruning.method=nm``: N:M structured sparsity (2:4 by default, the pattern sparse tensor
cores run), one shot at level 1 from the dense network's trained weights: of every ``M``
consecutive weights along a kernel's input dimension (one output unit's; for a Conv kernel
``(kh, kw, in, out)``, ``M`` consecutive input channels at each ``(kh, kw, out)``), the ``N``
of largest ``|w|`` stay, ties to the lower input index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import PruneInputs, Strategy, Timeline
from lottery.pruning.mask import Mask, flatten, unflatten

KEYS = frozenset({"nm_n", "nm_m"})
KERNEL_RANKS = (2, 4)  # Dense (in, out) and Conv (kh, kw, in, out) kernels


@dataclass(frozen=True)
class NMSettings:
    """Keep ``n`` of every ``m`` consecutive input weights."""

    n: int
    m: int


def settings(cfg: PruningConfig, timeline: Timeline | None) -> NMSettings:
    if not 1 <= cfg.nm_n < cfg.nm_m:
        raise ConfigError(
            f"pruning.nm_n={cfg.nm_n} and pruning.nm_m={cfg.nm_m} must satisfy 1 <= nm_n < "
            "nm_m (2:4 is nm_n=2 nm_m=4)"
        )
    if cfg.levels != 1:
        raise ConfigError(
            f"pruning.levels={cfg.levels} does not apply to pruning.method=nm, which prunes "
            "once to its N:M pattern; set pruning.levels=1"
        )
    return NMSettings(cfg.nm_n, cfg.nm_m)


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


def nm_mask(kernel: np.ndarray, n: int, m: int) -> np.ndarray:
    """A bool mask of ``kernel``'s shape keeping, of each ``m`` consecutive entries along
    the input axis (``-2``), the ``n`` of largest ``|w|`` (ties to the lower index)."""
    w = np.abs(np.asarray(kernel, dtype=np.float64))
    *lead, inputs, outputs = w.shape
    groups = w.reshape(*lead, inputs // m, m, outputs)
    order = np.argsort(-groups, axis=-2, kind="stable")  # largest first, ties: lower index
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n, :], True, axis=-2)
    return keep.reshape(w.shape)


def prune(inputs: PruneInputs, s: NMSettings) -> Mask:
    dense = flatten(inputs.dense())
    flat = {p: np.array(m, dtype=bool, copy=True) for p, m in flatten(inputs.mask).items()}
    for path in inputs.prunable:
        flat[path] = nm_mask(dense[path], s.n, s.m)
    return unflatten(flat)


STRATEGY = Strategy("nm", KEYS, settings, prune, check, ranks_dense_weights=True)
