"""Pruning to an accuracy budget (``pruning.max_accuracy_drop``): what it chose.

The driver stops after the first level whose validation accuracy is more than the budget
below level 0's; the level before it is the answer. This module judges and records it in
the replicate's ``budget.json`` (test accuracy is reported, never used to choose).
"""

from __future__ import annotations

import json
from typing import Any

from lottery.atomic import atomic_write_json
from lottery.logging import console
from lottery.store import ReplicateStore
from lottery.store.files import METRICS_FILE

# What an accuracy budget chose, in the replicate's folder.
BUDGET_FILE = "budget.json"


def over_budget(
    replicate: ReplicateStore, level: int, drop: float | None, last: int, prefix: str = ""
) -> bool:
    """With ``pruning.max_accuracy_drop=drop``: whether level ``level`` fell past the budget
    (the run stops there; the level before is the answer, written to ``budget.json`` and
    told in one line, as it is when the ``last`` level is within it). Judged on validation
    accuracy, the same way for levels trained now or before."""
    if drop is None or level == 0:
        return False
    reference, current = val_accuracy(replicate, 0), val_accuracy(replicate, level)
    # Rounded: a drop of exactly the budget (61.2% to 60.2%) is within it.
    over = round(100 * (reference - current), 6) > drop
    if over or level == last:
        chosen = level - 1 if over else level
        verdict = budget_verdict(replicate, chosen, drop, level if over else None)
        atomic_write_json(replicate.path / BUDGET_FILE, verdict)
        console.print(f"{prefix}{describe_budget(verdict)}")
    return over


def budget_verdict(
    replicate: ReplicateStore, chosen: int, drop: float, first_over: int | None
) -> dict[str, Any]:
    """What an accuracy budget chose: the sparsest level within it, judged on validation
    accuracy, with its test accuracy reported (test never chose it)."""
    summary = replicate.summary(chosen)
    return {
        "max_accuracy_drop": drop,
        "reference_val_accuracy": val_accuracy(replicate, 0),
        "chosen_level": chosen,
        "chosen_val_accuracy": val_accuracy(replicate, chosen),
        "chosen_test_accuracy": summary["test_accuracy"],
        "weights_remaining_pct": summary["weights_remaining_pct"],
        "first_level_over_budget": first_over,
    }


def val_accuracy(replicate: ReplicateStore, level: int) -> float:
    """A finished level's final validation accuracy (from its metrics when its summary is
    older than the ``val_accuracy`` entry)."""
    value = replicate.summary(level).get("val_accuracy")
    if value is None:
        lines = (replicate.level_path(level) / METRICS_FILE).read_text().splitlines()
        value = json.loads(lines[-1])["val/accuracy"]
    return float(value)


def describe_budget(verdict: dict[str, Any]) -> str:
    """One console line for a budget's choice."""
    within = f"within {verdict['max_accuracy_drop']:g} points of level 0's validation accuracy"
    over = verdict["first_level_over_budget"]
    ended = f"level {over} fell past it" if over is not None else "no level fell past it"
    return (
        f"budget: level {verdict['chosen_level']} ({verdict['weights_remaining_pct']:.2f}% "
        f"weights left) is the sparsest {within} (val "
        f"{100 * verdict['chosen_val_accuracy']:.2f}% against "
        f"{100 * verdict['reference_val_accuracy']:.2f}%; {ended}); its test accuracy "
        f"{100 * verdict['chosen_test_accuracy']:.2f}%"
    )
