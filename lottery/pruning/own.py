"""A pruning method of your own, found without editing the package.

``pruning.method=package.module:NAME`` imports ``NAME`` from ``package.module`` (from
``sys.path`` and the folder the command runs in, as ``python -m`` finds modules, writing no
``__pycache__`` beside the user's file), as ``model.name=package.module:Name`` does for a
model. An installed package can instead declare an entry point in the group
``lottery.methods``, whose name is then a method name like the built-in ones::

    [project.entry-points."lottery.methods"]
    mymethod = "mypackage.mymethod:STRATEGY"

``NAME`` (or the entry point) is a :class:`lottery.pruning.base.Strategy`. Its ``prune`` is
wrapped so that a mask of the wrong shape, or one that does not keep the count its
``weight_groups`` declares, stops the run with one line before that level is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lottery.config import ConfigError, PruningConfig, RunError
from lottery.config.imports import find_user_object, require_instance
from lottery.pruning.base import PruneInputs, Strategy, levels_that_prune
from lottery.pruning.mask import Mask, flatten

ENTRY_POINTS = "lottery.methods"


def _checked(method: str, found: Any) -> Strategy:
    require_instance(
        "pruning.method", method, found, Strategy, "name the module's Strategy entry"
    )
    fields = {item.name for item in dataclasses.fields(PruningConfig)}
    unknown = sorted(found.keys - fields)
    if unknown:
        raise ConfigError(
            f"pruning.method={method!r} declares keys {', '.join(unknown)}, which pruning does "
            "not have; declare only keys of pruning (python -m lottery --cfg job lists them)"
        )
    return dataclasses.replace(found, prune=_checking_masks(method, found))


def own_strategy(method: str) -> Strategy | None:
    """The user's strategy ``method`` names (an import path or an entry point), or None."""
    found = find_user_object(
        "pruning.method", method, ENTRY_POINTS, "Strategy", "package.module:NAME"
    )
    return None if found is None else _checked(method, found)


def _checking_masks(method: str, strategy: Strategy) -> Any:
    def prune(inputs: PruneInputs, settings: Any) -> Mask:
        mask = strategy.prune(inputs, settings)
        check_mask(method, strategy, settings, inputs, mask)
        return mask

    return prune


def check_mask(
    method: str, strategy: Strategy, settings: Any, inputs: PruneInputs, mask: Any
) -> None:
    """One RunError line if ``mask`` (level ``inputs.level``'s) is not shaped as the mask it
    was made from, or does not keep the count the strategy's ``weight_groups`` declare."""
    try:
        given = {p: np.asarray(m) for p, m in flatten(mask).items()}
    except Exception as error:
        raise RunError(
            f"pruning.method={method!r} returned a {type(mask).__name__} at level "
            f"{inputs.level}, not a mask shaped as its inputs' ({error})"
        ) from None
    before = {p: np.asarray(m) for p, m in flatten(inputs.mask).items()}
    if sorted(given) != sorted(before):
        missing = sorted(set(before) ^ set(given))[:3]
        raise RunError(
            f"pruning.method={method!r} returned a mask at level {inputs.level} whose leaves "
            f"differ from the network's ({', '.join(missing)}); return one boolean array per "
            "leaf of inputs.mask"
        )
    for path, value in given.items():
        if value.shape != before[path].shape:
            raise RunError(
                f"pruning.method={method!r} returned a mask at level {inputs.level} whose "
                f"{path} has shape {value.shape}, not the weight's {before[path].shape}"
            )
    if strategy.weight_groups is None:
        return
    groups = strategy.weight_groups(inputs.params, inputs.prunable, settings)
    expected = levels_that_prune(groups, inputs.level)[1]
    alive = sum(int(np.count_nonzero(given[p])) for p in inputs.prunable)
    if alive != expected:
        raise RunError(
            f"pruning.method={method!r} kept {alive:,} prunable weights at level "
            f"{inputs.level}; its weight_groups declare {expected:,}; keep exactly that count"
        )
