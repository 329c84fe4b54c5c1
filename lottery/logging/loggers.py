"""Metric loggers beside the local store (W&B, ...), behind one small interface.

The local store is the record; a logger is a copy for dashboards. A logger must never stop
training: one that fails warns once and goes quiet (see each implementation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from lottery.atomic import this_process_writes
from lottery.config import Config, ConfigError


class RunLogger(Protocol):
    """Receives what the store receives, as it happens."""

    def begin_level(
        self, level: int, weights_remaining_pct: float, folder: Path | None = None
    ) -> None:
        """A level (or branch) starts training with this % of its prunable weights alive;
        ``folder`` is where it will be once finished (its ``.partial`` twin holds it now)."""

    def log_eval(self, level: int, record: dict[str, float]) -> None:
        """One evaluation of a level (``iteration``, ``train/loss``, ``test/accuracy``, ...)."""

    def log_level(self, summary: dict[str, Any], folder: Path) -> None:
        """A finished level (or branch): its summary, and its folder in the store (with
        ``metrics.jsonl``). Called for every finished level on every run, trained now or
        before: a logger that copies the store (W&B) sends what it has not sent yet."""

    def finish(self, rows: list[dict[str, Any]]) -> None:
        """The run is over; ``rows`` is the experiment's curve (curve.csv)."""


LOGGERS = ("none", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


def make_loggers(cfg: Config, digest: str) -> list[RunLogger]:
    """The loggers ``cfg.logger`` names, for the experiment with hash ``digest`` (none in a
    process that does not write: one experiment over several processes logs from the first)."""
    if cfg.logger.name == "none":
        return []
    if cfg.logger.name == "wandb":
        if cfg.logger.mode not in WANDB_MODES:
            raise ConfigError(
                f"unknown logger.mode {cfg.logger.mode!r}; choose one of {', '.join(WANDB_MODES)}"
            )
        if not this_process_writes():
            return []
        from lottery.logging.wandb_logger import WandbLogger  # imports wandb only when used

        return [WandbLogger(cfg, digest)]
    raise ConfigError(f"unknown logger {cfg.logger.name!r}; choose one of {', '.join(LOGGERS)}")
