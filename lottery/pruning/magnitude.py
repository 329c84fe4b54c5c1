"""Magnitude pruning, global or layer-wise, exact to the weight.

From ``n`` alive weights in a group, exactly ``round(p * n)`` are removed (half rounds up),
those of the smallest score; ties go to the earlier weight (sorted parameter path, then
flat index), so the same weights always give the same mask.

The score is the final magnitude |w_T| by default; Zhou et al. (2019, "Deconstructing
Lottery Tickets") compare it with scores that also look at the weights w_k training started
from: ``magnitude_increase`` |w_T| - |w_k| and ``movement`` |w_T - w_k|.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import numpy as np

from lottery.config import ConfigError
from lottery.pruning.mask import Mask, flatten, layer_of, unflatten
from lottery.pruning.topk import choose_alive


def prune_count(fraction: float, alive: int) -> int:
    """How many of ``alive`` weights a level removes at rate ``fraction``: round half up.

    In exact rational arithmetic on the fraction as written (``0.35`` is 7/20, not the
    binary float just below it), so ``round(0.35 * 20) = 7`` as a reader expects, for every n.
    """
    rate = Fraction(repr(float(fraction)))
    return min(alive, (2 * rate.numerator * alive + rate.denominator) // (2 * rate.denominator))


def layer_rates(
    paths: list[str], fraction: float, layer_fractions: dict[str, float]
) -> dict[str, float | None]:
    """Each prunable path's own rate, or None where the default ``fraction`` applies.

    Keys of ``layer_fractions`` are regexes matched in full against layer names; the first
    matching key wins. A key that matches no prunable layer is an error (a typo would
    otherwise silently prune the layer at the default rate).
    """
    rates: dict[str, float | None] = dict.fromkeys(paths)
    for key, rate in layer_fractions.items():
        if not 0.0 <= rate < 1.0:
            raise ConfigError(
                f"pruning.layer_fractions.{key}={rate} must be in [0, 1); "
                "it is the fraction of that layer's remaining weights pruned per level"
            )
        try:
            regex = re.compile(key)
        except re.error as error:
            raise ConfigError(
                f"pruning.layer_fractions key {key!r} is not a regex ({error})"
            ) from None
        matched = [p for p in paths if regex.fullmatch(layer_of(p))]
        if not matched:
            layers = sorted({layer_of(p) for p in paths})
            raise ConfigError(
                f"pruning.layer_fractions key {key!r} matches no prunable layer; "
                f"layers are {', '.join(layers)}"
            )
        for path in matched:
            if rates[path] is None:
                rates[path] = float(rate)
    return rates


def pruning_groups(
    paths: list[str], scope: str, fraction: float, layer_fractions: dict[str, float]
) -> list[tuple[float, list[str]]]:
    """Groups of paths ranked together, each with its rate.

    ``layerwise``: every path is its own group. ``global``: paths with their own rate are
    their own groups; all the others form one group at ``fraction``.
    """
    rates = layer_rates(paths, fraction, layer_fractions)
    if scope == "layerwise":
        return [(fraction if rates[p] is None else rates[p], [p]) for p in paths]
    if scope == "global":
        shared = [p for p in paths if rates[p] is None]
        own = [(rates[p], [p]) for p in paths if rates[p] is not None]
        return ([(fraction, shared)] if shared else []) + own
    raise ConfigError(f"unknown pruning.scope {scope!r}; choose global or layerwise")


CRITERIA = ("magnitude", "magnitude_increase", "movement")


def criterion_scores(criterion: str, trained: Any, start: Any | None = None) -> dict[str, Any]:
    """Per parameter path, the score of every weight under ``criterion`` (low = pruned first).

    ``start`` holds the weights training started from (needed by all but ``magnitude``).
    """
    final = {p: np.asarray(w) for p, w in flatten(trained).items()}
    if criterion == "magnitude":
        return {p: np.abs(w) for p, w in final.items()}
    if criterion not in CRITERIA:
        raise ConfigError(
            f"unknown pruning.criterion {criterion!r} for magnitude pruning; choose one of "
            f"{', '.join(CRITERIA)}"
        )
    initial = {p: np.asarray(w) for p, w in flatten(start).items()}
    if criterion == "magnitude_increase":
        return {p: np.abs(w) - np.abs(initial[p]) for p, w in final.items()}
    return {p: np.abs(w - initial[p]) for p, w in final.items()}


def remove_lowest(scores: dict[str, np.ndarray], mask: dict[str, np.ndarray], k: int) -> None:
    """Set the ``k`` alive entries of lowest score False, in place (ties: earlier first)."""
    if k == 0:
        return
    for path, doomed in choose_alive(scores, mask, list(scores), k, lowest=True).items():
        mask[path].reshape(-1)[doomed] = False


def prune_group(scores: dict[str, np.ndarray], mask: dict[str, np.ndarray], rate: float) -> None:
    """Remove ``round(rate * alive)`` lowest-score alive weights of a group, in place."""
    alive = sum(int(np.count_nonzero(mask[p])) for p in scores)
    remove_lowest(scores, mask, prune_count(rate, alive))


def magnitude_prune(
    params: Any,
    mask: Mask,
    paths: list[str],
    scope: str,
    fraction: float,
    layer_fractions: dict[str, float],
    scores: dict[str, Any] | None = None,
) -> Mask:
    """The next level's mask: prune ``params`` (trained under ``mask``) by magnitude, or by
    ``scores`` (per path, as from :func:`criterion_scores`) when given."""
    if scores is None:
        scores = criterion_scores("magnitude", params)
    new_mask = {p: np.array(m, dtype=bool, copy=True) for p, m in flatten(mask).items()}
    for rate, group in pruning_groups(paths, scope, fraction, layer_fractions):
        group_mask = {p: new_mask[p] for p in group}
        prune_group({p: scores[p] for p in group}, group_mask, rate)
    return unflatten(new_mask)
