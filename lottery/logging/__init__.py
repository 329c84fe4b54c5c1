"""Console progress and tables, and metric loggers beside the store (W&B)."""

from lottery.logging.console import LevelProgress, console, error_line, summary_table
from lottery.logging.loggers import RunLogger, make_loggers

__all__ = ["LevelProgress", "RunLogger", "console", "error_line", "make_loggers", "summary_table"]
