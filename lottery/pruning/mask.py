"""Masks: pytrees of bools shaped like the params (True = the weight is alive).

Parameters are addressed by ``/``-joined paths such as ``fc1/kernel``; which leaves are
prunable is a regex over those paths. Non-prunable leaves (biases, normalisation) carry an
all-True mask, so applying a mask is one ``tree_map`` over the whole tree.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lottery.config import ConfigError

Mask = Any  # a nested dict of bool arrays shaped like the params


def flatten(tree: Any) -> dict[str, Any]:
    """``{"fc1/kernel": leaf, ...}`` in sorted path order."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    return {path: flat[path] for path in sorted(flat)}


def unflatten(flat: dict[str, Any]) -> Any:
    """Inverse of :func:`flatten`."""
    return traverse_util.unflatten_dict(flat, sep="/")


def layer_of(path: str) -> str:
    """The layer of a parameter: its path without the last part (``fc1/kernel`` → ``fc1``)."""
    return path.rsplit("/", 1)[0] if "/" in path else path


def prunable_paths(params: Any, pattern: str) -> list[str]:
    """Sorted paths of the leaves that ``pattern`` (a regex matched in full) selects."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"pruning.prunable={pattern!r} is not a valid regex ({error})") from None
    paths = [path for path in flatten(params) if regex.fullmatch(path)]
    if not paths:
        raise ConfigError(
            f"pruning.prunable={pattern!r} selects no parameter; paths are like "
            f"{', '.join(list(flatten(params))[:4])}"
        )
    return paths


def full_mask(params: Any) -> Mask:
    """A mask that keeps every weight."""
    return jax.tree.map(lambda p: np.ones(np.shape(p), dtype=bool), params)


def apply_mask(params: Any, mask: Mask) -> Any:
    """Params with every pruned weight set to exactly +0.0."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def count_alive(mask: Mask, paths: list[str]) -> int:
    """Alive weights among the leaves at ``paths``."""
    flat = flatten(mask)
    return int(sum(np.count_nonzero(flat[path]) for path in paths))
