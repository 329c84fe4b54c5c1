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
from lottery.pruning.base import PruneInputs, Strategy, TrainingInputs, levels_that_prune
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
            "not have; declare a setting of its own in own_keys (then set it as "
            "+pruning.own.<key>=VALUE)"
        )
    return dataclasses.replace(
        found,
        prune=_checking_masks(method, found),
        training_updates=_checking_updates(method, found),
    )


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
    given = check_shape(method, f"at level {inputs.level}", inputs.mask, mask)
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


def check_shape(method: str, where: str, before: Any, mask: Any) -> dict[str, np.ndarray]:
    """``mask`` flattened, or one RunError line if it is not shaped as ``before`` (the mask
    it was made from; ``where`` says when, for the message)."""
    try:
        given = {p: np.asarray(m) for p, m in flatten(mask).items()}
    except Exception as error:
        raise RunError(
            f"pruning.method={method!r} returned a {type(mask).__name__} {where}, not a mask "
            f"shaped as its inputs' ({error})"
        ) from None
    before = {p: np.asarray(m) for p, m in flatten(before).items()}
    if sorted(given) != sorted(before):
        missing = sorted(set(before) ^ set(given))[:3]
        raise RunError(
            f"pruning.method={method!r} returned a mask {where} whose leaves differ from the "
            f"network's ({', '.join(missing)}); return one boolean array per leaf of "
            "inputs.mask"
        )
    for path, value in given.items():
        if value.shape != before[path].shape:
            raise RunError(
                f"pruning.method={method!r} returned a mask {where} whose {path} has shape "
                f"{value.shape}, not the weight's {before[path].shape}"
            )
    return given


def _checking_updates(method: str, strategy: Strategy) -> Any:
    """``strategy.training_updates`` with each update's mask checked by :func:`check_shape`."""
    if strategy.training_updates is None:
        return None

    def training_updates(settings: Any, prunable: list[str], start: int, end: int) -> Any:
        steps, update = strategy.training_updates(settings, prunable, start, end)

        def checked(inputs: TrainingInputs) -> Mask:
            mask = update(inputs)
            check_shape(method, f"at step {inputs.step}", inputs.mask, mask)
            return mask

        return steps, checked

    return training_updates
