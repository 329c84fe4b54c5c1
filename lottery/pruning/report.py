"""How much of a network a mask keeps, overall and per layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from lottery.pruning.mask import Mask, flatten


def sparsity_report(mask: Mask, paths: list[str]) -> dict[str, Any]:
    """Weights remaining among prunable leaves, overall and for each prunable leaf.

    ``weights_remaining_pct`` is the papers' "percent of weights remaining": alive prunable
    weights over all prunable weights. ``params_remaining`` counts every parameter, biases and
    normalisation parameters included.
    """
    flat = flatten(mask)
    layers = {}
    for path in paths:
        total = int(flat[path].size)
        alive = int(np.count_nonzero(flat[path]))
        layers[path] = {"remaining": alive, "total": total, "pct": 100.0 * alive / total}
    alive = sum(layer["remaining"] for layer in layers.values())
    total = sum(layer["total"] for layer in layers.values())
    fixed = sum(int(m.size) for p, m in flat.items() if p not in layers)
    return {
        "weights_remaining_pct": 100.0 * alive / total,
        "prunable_remaining": alive,
        "prunable_total": total,
        "params_remaining": alive + fixed,
        "params_total": total + fixed,
        "layers": layers,
    }
