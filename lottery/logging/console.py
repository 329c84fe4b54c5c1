"""Console output: a rich progress bar per level and the table of finished levels."""

from __future__ import annotations

import sys
import threading
import time
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

console = Console(stderr=False, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """Print the one line a user sees for bad input."""
    print(f"error: {message}", file=sys.stderr, flush=True)


class LevelProgress:
    """Progress of one level's training: step, train loss, accuracy, steps/s.

    On a terminal, a live rich bar. Elsewhere (a Slurm log, CI, a pipe) a live bar is noise,
    so one plain line per evaluation instead, as from a replica's thread (several seeds
    training at once, ``train.replicas``: rich shows one live bar at a time). ``prefix``
    starts the label (the seed). ``enabled=False`` shows nothing.
    """

    def __init__(
        self, level: int, weights_pct: float, start: int, end: int, enabled: bool, prefix: str = ""
    ):
        self.start, self.end = start, end
        self.label = f"{prefix}level {level:>2} [{weights_pct:6.2f}% left]"
        in_thread = threading.current_thread() is not threading.main_thread()
        self.lines = enabled and (in_thread or not console.is_terminal)
        self.began = time.perf_counter()
        self.progress = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled or self.lines,
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
        done = record["iteration"] - self.start
        elapsed = time.perf_counter() - self.began
        speed = done / elapsed if elapsed > 0 else 0.0
        parts = []
        if "train/loss" in record:
            parts.append(f"loss {record['train/loss']:.4f}")
        if "test/accuracy" in record:
            parts.append(f"test acc {100 * record['test/accuracy']:.2f}%")
        parts.append(f"{speed:,.0f} steps/s")
        stats = "  ".join(parts)
        if self.lines:
            step = f"{record['iteration']:,}/{self.end:,}"
            console.print(f"{self.label} step {step}  {stats}", soft_wrap=True)
        else:
            self.progress.update(self.task, completed=done, stats=stats)


def summary_table(rows: Iterable[dict[str, Any]], title: str) -> Table:
    """One row per replicate, level and branch, as in ``curve.csv`` (the branch column only
    when there are branches besides the main ``imp`` line)."""
    rows = list(rows)
    branches = any(row.get("branch", "imp") != "imp" for row in rows)
    table = Table(title=title)
    # Short, two-line headers: the table fits 80 columns (a Slurm log, a narrow terminal).
    for column in (
        "seed",
        "level",
        *(["branch"] if branches else []),
        "weights\n%",
        "test\nacc %",
        "early\nstop it",
        "acc\nthere %",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row["replicate"]),
            str(row["level"]),
            *([str(row.get("branch", "imp"))] if branches else []),
            f"{row['weights_remaining_pct']:.2f}",
            f"{100 * row['test_accuracy']:.2f}",
            "-" if row.get("early_stop_iteration") is None else str(row["early_stop_iteration"]),
            _pct(row.get("early_stop_test_accuracy")),
        )
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
