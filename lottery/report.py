"""Tables and figures of finished experiments: ``python -m lottery.report PATH... [--out DIR]``.

PATHs are results roots, experiment folders or globs (see
:func:`lottery.analysis.results.load_results`). Prints the levels' results aggregated over
replicates (mean ± std) and writes, into ``--out`` (default: the first PATH's folder):

* ``accuracy_vs_weights.png/.pdf`` — test accuracy vs. % weights remaining, a band over
  replicates, one line per experiment/hash/branch;
* ``early_stopping.png/.pdf`` — early-stopping iteration and test accuracy there (when the
  runs had a validation set);
* ``training_curves.png/.pdf`` — test accuracy over training for a few levels;
* ``deployment.png/.pdf`` — test accuracy against size on disk and CPU latency, with the
  deployment table printed (runs with ``deploy.measure=true`` only);
* ``aggregate.csv`` — the printed table, every statistic.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from lottery.analysis import (
    aggregate,
    load_deployment,
    load_metrics,
    load_results,
    plot_accuracy_vs_weights,
    plot_deployment,
    plot_early_stopping,
    plot_training_curves,
)
from lottery.logging import error_line
from lottery.logging.deployment_table import deployment_table, onnx_latency_table


def default_out(first: str) -> Path:
    """The first PATH's folder: itself, a file's parent, or a glob's fixed prefix."""
    parts = Path(first).expanduser().parts
    fixed = []
    for part in parts:
        if re.search(r"[*?\[]", part):
            break
        fixed.append(part)
    path = Path(*fixed) if fixed else Path(".")
    return path.parent if path.is_file() else path


def _mean_std(row: pd.Series, metric: str, scale: float, digits: int) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if pd.isna(std) else f"{text} ± {std * scale:.{digits}f}"


def results_table(
    stats: pd.DataFrame, title: str = "results (mean ± std over replicates)"
) -> Table:
    """One row per experiment, hash, branch and level."""
    table = Table(title=title)
    for column in ("experiment", "hash", "branch"):
        table.add_column(column, no_wrap=True)
    for column in (
        "level",
        "weights left %",
        "n",
        "test acc %",
        "early-stop it",
        "acc at early stop %",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for _, row in stats.iterrows():
        table.add_row(
            str(row["experiment"]),
            str(row["hash"]),
            str(row["branch"]),
            str(row["level"]),
            f"{row['weights_remaining_pct']:.2f}",
            str(row["count"]),
            _mean_std(row, "test_accuracy", 100, 2),
            _mean_std(row, "early_stop_iteration", 1, 0),
            _mean_std(row, "early_stop_test_accuracy", 100, 2),
        )
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lottery.report",
        description="Aggregate finished experiments over replicates; print a table, draw figures.",
    )
    parser.add_argument("paths", nargs="+", help="results roots, experiment folders or globs")
    parser.add_argument("--out", help="folder for the figures and aggregate.csv (default: PATH)")
    parser.add_argument(
        "--band",
        choices=("std", "minmax", "none"),
        default="std",
        help="band over replicates: ± one std (default), min–max, or none",
    )
    parser.add_argument(
        "--levels",
        help="levels in the training-curve figure, comma-separated (default: up to six)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    band = None if args.band == "none" else args.band
    try:
        levels = [int(v) for v in args.levels.split(",")] if args.levels else None
    except ValueError:
        error_line(f"--levels={args.levels!r} must be comma-separated integers, like 0,3,7")
        return 2
    try:
        df = load_results(*args.paths)
    except FileNotFoundError as error:
        error_line(str(error))
        return 2
    if df.empty:
        error_line(f"no finished level (summary.json) under {', '.join(args.paths)}")
        return 2
    out = Path(args.out) if args.out else default_out(args.paths[0])
    try:
        return write_report(args, df, out, band, levels)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        error_line(
            f"the disk is full (writing under {out}); the results are intact: free some space "
            "and run the same command again"
        )
        return 1


def write_report(
    args: argparse.Namespace,
    df: pd.DataFrame,
    out: Path,
    band: str | None,
    levels: list[int] | None,
) -> int:
    """Print the table and write the figures and ``aggregate.csv`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stats = aggregate(df)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(results_table(stats))
    stats.to_csv(out / "aggregate.csv", index=False)
    written = [out / "aggregate.csv"]
    written += plot_accuracy_vs_weights(df, out / "accuracy_vs_weights", band=band)
    try:
        written += plot_early_stopping(df, out / "early_stopping", band=band)
    except ValueError as error:
        console.print(f"early_stopping: skipped ({error})")
    written += plot_training_curves(
        load_metrics(*args.paths), out / "training_curves", levels=levels, band=band
    )
    deployment = load_deployment(*args.paths)
    if deployment:
        console.print(deployment_table(deployment, "deployment (each level, as measured)"))
        onnx = onnx_latency_table(deployment, "onnxruntime latency (each level, as measured)")
        if onnx is not None:
            console.print(onnx)
        written += plot_deployment(deployment, out / "deployment")
    for path in written:
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
