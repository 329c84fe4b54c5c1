"""Console progress and tables (W&B logging joins here)."""

from lottery.logging.console import LevelProgress, console, error_line, summary_table

__all__ = ["LevelProgress", "console", "error_line", "summary_table"]
