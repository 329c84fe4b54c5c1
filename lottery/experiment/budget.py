"""Pruning to an accuracy budget (``pruning.max_accuracy_drop``): what it chose.

The driver stops after the first level whose validation accuracy is more than the budget
below level 0's; the level before it is the answer. This module judges and records it in
the replicate's ``budget.json`` (test accuracy is reported, never used to choose).
"""

from __future__ import annotations

import json
from typing import Any

from lottery.store import ReplicateStore

# What an accuracy budget chose, in the replicate's folder.
BUDGET_FILE = "budget.json"


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
        lines = (replicate.level_path(level) / "metrics.jsonl").read_text().splitlines()
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
