"""Console output: a rich progress bar per level and the table of finished levels."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

console = Console(stderr=False, highlight=False)


def error_line(message: str) -> None:
    """Print the one line a user sees for bad input."""
    print(f"error: {message}", file=sys.stderr, flush=True)


class LevelProgress:
    """A progress bar for one level's training: step, train loss, accuracy, steps/s."""

    def __init__(self, level: int, weights_pct: float, start: int, end: int, enabled: bool):
        self.start, self.end = start, end
        self.progress = Progress(
            TextColumn(f"level {level:>2} [{weights_pct:6.2f}% left]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=end - start, stats="")

    def __enter__(self) -> LevelProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, record: dict[str, float]) -> None:
        """Advance to an evaluation's iteration and show its numbers."""
        task = self.progress.tasks[0]
        done = record["iteration"] - self.start
        elapsed = task.elapsed or 0.0
        speed = done / elapsed if elapsed > 0 else 0.0
        parts = []
        if "train/loss" in record:
            parts.append(f"loss {record['train/loss']:.4f}")
        if "test/accuracy" in record:
            parts.append(f"test acc {100 * record['test/accuracy']:.2f}%")
        parts.append(f"{speed:,.0f} steps/s")
        self.progress.update(self.task, completed=done, stats="  ".join(parts))


def summary_table(rows: Iterable[dict[str, Any]], title: str) -> Table:
    """One row per replicate, level and branch, as in ``curve.csv`` (the branch column only
    when there are branches besides the main ``imp`` line)."""
    rows = list(rows)
    branches = any(row.get("branch", "imp") != "imp" for row in rows)
    table = Table(title=title)
    for column in (
        "replicate",
        "level",
        *(["branch"] if branches else []),
        "weights left %",
        "test acc %",
        "best test acc %",
        "early-stop it",
        "acc at early stop %",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["replicate"]),
            str(row["level"]),
            *([str(row.get("branch", "imp"))] if branches else []),
            f"{row['weights_remaining_pct']:.2f}",
            f"{100 * row['test_accuracy']:.2f}",
            f"{100 * row['best_test_accuracy']:.2f}",
            str(row["early_stop_iteration"]),
            _pct(row.get("early_stop_test_accuracy")),
        )
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
