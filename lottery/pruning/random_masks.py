"""Random masks as sparse as a given one: the random-pruning control of a lottery ticket."""

from __future__ import annotations

import numpy as np

from lottery.config import ConfigError
from lottery.pruning.mask import Mask, flatten, unflatten

RANDOM_SCOPES = ("layerwise", "global")


def random_mask_like(mask: Mask, prunable: list[str], scope: str, rng: np.random.Generator) -> Mask:
    """A uniformly random mask keeping as many prunable weights as ``mask``.

    ``layerwise``: the same count in every prunable leaf (the layer-wise sparsities of the
    ticket, which carry much of its information; Frankle et al. 2021). ``global``: the same
    total count spread at random over all prunable leaves. Other leaves (biases,
    normalisation) are all kept: a structured ticket's masked biases would otherwise silence
    units whose random weights are alive.
    """
    if scope not in RANDOM_SCOPES:
        raise ConfigError(
            f"unknown branch.random_prune.scope {scope!r}; choose one of {', '.join(RANDOM_SCOPES)}"
        )
    flat = {
        p: np.array(m, dtype=bool, copy=True) if p in prunable else np.ones(np.shape(m), bool)
        for p, m in flatten(mask).items()
    }
    if scope == "layerwise":
        for path in prunable:
            flat[path] = _random_keep(flat[path].shape, int(np.count_nonzero(flat[path])), rng)
        return unflatten(flat)
    sizes = [flat[p].size for p in prunable]
    keep = sum(int(np.count_nonzero(flat[p])) for p in prunable)
    chosen = _random_keep((sum(sizes),), keep, rng)
    for path, part in zip(prunable, np.split(chosen, np.cumsum(sizes)[:-1]), strict=True):
        flat[path] = part.reshape(flat[path].shape)
    return unflatten(flat)


def _random_keep(shape: tuple[int, ...], keep: int, rng: np.random.Generator) -> np.ndarray:
    """A bool array of ``shape`` with exactly ``keep`` True entries at random positions."""
    size = int(np.prod(shape))
    out = np.zeros(size, dtype=bool)
    out[rng.choice(size, size=keep, replace=False)] = True
    return out.reshape(shape)
