"""What a run tells as it goes: a console line per finished level or branch, and each
finished folder handed to the loggers (W&B)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lottery.logging import RunLogger, console
from lottery.store import read_summary


def print_finished(
    level: int, summary: dict[str, Any], branch: str | None = None, prefix: str = ""
) -> None:
    """One console line for a level (or one of its branches) trained by this run."""
    name = f"{prefix}level {level:>2}" + (f" {branch}" if branch else "")
    console.print(
        f"{name}: {summary['weights_remaining_pct']:6.2f}% weights left, test accuracy "
        f"{100 * summary['test_accuracy']:.2f}% ({summary['timing']['wall']:.1f} s)"
    )


def send_folder_to_loggers(loggers: Sequence[RunLogger], digest: str, folder: Path) -> None:
    """Give a finished level's or branch's folder to the loggers; ``digest`` names the
    experiment (level 0's folder is shared, and named by this experiment too)."""
    summary = read_summary(folder)
    if loggers and summary is not None:
        summary["hash"] = digest
        for logger in loggers:
            logger.log_level(summary, folder)
