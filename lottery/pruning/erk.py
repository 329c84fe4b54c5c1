"""Per-layer densities (``pruning.distribution``): ``uniform`` ranks all prunable layers
together; ``erk`` gives each layer the Erdős–Rényi-Kernel density of Evci et al. 2020
("Rigging the Lottery", Appendix), as the RigL code's ``sparse_utils.get_sparsities`` with
``'erdos_renyi_kernel'`` computes it (``get_sparsities_erdos_renyi``, ``include_kernel=True``,
``erk_power_scale=1``):

- a layer of shape ``(d_1, …, d_k)`` gets density ``ε · (Σ d_i) / (Π d_i)``;
- ``ε`` makes the kept total that of the uniform sparsity ``s``: ``Σ_l (n_l − ⌊s n_l⌋)``;
- a layer whose density would exceed 1 is made dense (those of the largest raw density,
  one value at a time), its weights counted in the total, and ``ε`` solved again for the
  rest.

Each layer then keeps ``round(density_l · n_l)`` weights (half up), so the total is the
target to within the rounding of the layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lottery.config import ConfigError

DISTRIBUTIONS = ("uniform", "erk")


def check_distribution(distribution: str) -> str:
    """``distribution`` if known, else one ConfigError line."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(
            f"unknown pruning.distribution {distribution!r}; choose one of "
            f"{', '.join(DISTRIBUTIONS)}"
        )
    return distribution


def erk_densities(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Each layer's ERK density for a total ``density`` of the weights in ``shapes``."""
    sparsity = 1.0 - density
    dense: set[str] = set()
    while True:
        raw, rhs, divisor = {}, 0.0, 0.0
        for path, shape in shapes.items():
            size = math.prod(shape)
            zeros = math.floor(sparsity * size)
            if path in dense:
                rhs -= zeros
            else:
                rhs += size - zeros
                raw[path] = sum(shape) / size
                divisor += raw[path] * size
        if not raw:  # every layer dense (density 1)
            return {path: 1.0 for path in shapes}
        eps = rhs / divisor
        largest = max(raw.values())
        if largest * eps <= 1:
            return {path: 1.0 if path in dense else eps * raw[path] for path in shapes}
        dense |= {path for path, value in raw.items() if value == largest}


def erk_keeps(shapes: Mapping[str, tuple[int, ...]], keep: int) -> dict[str, int]:
    """Weights each layer keeps under ERK when ``keep`` of all of them are kept in total."""
    total = sum(math.prod(shape) for shape in shapes.values())
    densities = erk_densities(shapes, keep / total if total else 1.0)
    return {
        path: min(math.prod(shape), math.floor(densities[path] * math.prod(shape) + 0.5))
        for path, shape in shapes.items()
    }


__all__ = ["DISTRIBUTIONS", "check_distribution", "erk_densities", "erk_keeps"]
