"""The one top-k selection every method uses: which alive weights of a group a level keeps or
removes, exactly ``count`` of them, ranked over the group's paths together.

Ties go to the earlier path (in the order given), then the lower flat index: a stable sort of
the alive scores laid end to end. Removing the ``k`` lowest and keeping the ``n - k``
highest therefore differ only on ties, each of which favours the earlier weight (removed
first by :func:`lottery.pruning.magnitude.remove_lowest`, kept first by
:func:`lottery.pruning.at_init.keep_top`).
"""

from __future__ import annotations

import numpy as np


def choose_alive(
    scores: dict[str, np.ndarray],
    mask: dict[str, np.ndarray],
    paths: list[str],
    count: int,
    *,
    lowest: bool,
) -> dict[str, np.ndarray]:
    """Per path, the flat indices of the ``count`` alive entries (``mask`` True) of lowest
    (``lowest=True``) or highest score, ranked over all of ``paths`` together."""
    positions = {p: np.flatnonzero(mask[p]) for p in paths}
    ranked = [np.asarray(scores[p], dtype=np.float64).ravel()[positions[p]] for p in paths]
    alive = np.concatenate(ranked) if ranked else np.zeros(0)
    order = np.argsort(alive if lowest else -alive, kind="stable")
    chosen = np.sort(order[:count])
    picked, start = {}, 0
    for path in paths:
        stop = start + len(positions[path])
        lo, hi = np.searchsorted(chosen, [start, stop])
        picked[path] = positions[path][chosen[lo:hi] - start]
        start = stop
    return picked
