"""Plots in the papers' style: weights remaining on a log x axis, dense on the left.

* :func:`plot_sparsity_accuracy` — one experiment's curve rows (``curve.csv``), PNG; the
  command line draws it after every run.
* :func:`plot_accuracy_vs_weights` — test accuracy against % weights remaining, one series
  per (experiment, hash, branch), mean over replicates with a band (std or min–max).
* :func:`plot_early_stopping` — the early-stopping iteration (minimum validation loss) and the
  test accuracy there, against % weights remaining (Frankle & Carbin 2019, Fig. 1 / 4).
* :func:`plot_training_curves` — test accuracy over training iterations for a few levels
  (Frankle & Carbin 2019, Fig. 3).

The last three take the DataFrames of :mod:`lottery.analysis.results` and write both
``<path>.png`` and ``<path>.pdf``; they return the two paths.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt
import numpy as np

from lottery.analysis.names import experiment_folder, series_names
from lottery.analysis.sparsity_figure import (
    BANDS,
    Curve,
    aggregate_rows,
    by_label,
    curves_from_stats,
    draw_curves,
    footnote,
    join_controls_to_dense,
    legends_outside,
    sparsity_accuracy_figure,
    weights_axis,
)
from lottery.atomic import atomic_write_bytes


def plot_sparsity_accuracy(
    rows: Iterable[dict[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Test accuracy against % weights remaining (mean ± std over replicates), saved as PNG.

    ``rows`` are one experiment's ``curve.csv`` rows; ``path`` is normally the store's
    ``<root>/<name>/<hash>/sparsity_accuracy.png``, whose folder names the experiment and
    holds the settings of the footnote. One series per branch, the final accuracy solid and
    the accuracy at early stop dashed (see :mod:`lottery.analysis.sparsity_figure`).
    """
    path = Path(path)
    folder = path.parent
    experiment = folder.parent.name if (folder / "hashed.json").is_file() else ""
    metrics = ("test_accuracy", "early_stop_test_accuracy")
    records = aggregate_rows(rows, experiment, folder.name, metrics)
    curves = curves_from_stats(records, metrics, band="std")
    fig = sparsity_accuracy_figure(curves, {(experiment, folder.name): folder}, metrics, title)
    _save_atomically(fig, path, "png")
    plt.close(fig)
    return path


# -- figures from the DataFrames of lottery.analysis.results ----------------------------------

def _save_atomically(fig: Any, path: Path, fmt: str) -> None:
    """Render ``fig`` and write it through a temp file of its own (two runs drawing the same
    plot at once never trip over each other's temp file). The saved area grows to hold the
    legends and footnotes outside the axes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", pad_inches=0.1)
    atomic_write_bytes(path, buffer.getvalue())


def save_figure(fig: Any, path: str | Path) -> tuple[Path, Path]:
    """Save ``fig`` as ``<path>.png`` and ``<path>.pdf`` (atomically) and close it."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        final = stem.with_name(stem.name + suffix)
        _save_atomically(fig, final, suffix[1:])
        written.append(final)
    plt.close(fig)
    return written[0], written[1]


def _band(ax: Any, x: Any, stats: Any, metric: str, band: str | None, scale: float, **kw) -> None:
    if band is None:
        return
    if band == "std":
        mean, std = stats[f"{metric}_mean"], stats[f"{metric}_std"].fillna(0.0)
        low, high = mean - std, mean + std
    elif band == "minmax":
        low, high = stats[f"{metric}_min"], stats[f"{metric}_max"]
    else:
        raise ValueError(f"band={band!r}; choose one of {BANDS}")
    ax.fill_between(x, low * scale, high * scale, alpha=0.2, linewidth=0, **kw)


def _series(df: Any) -> Iterable[tuple[tuple[Any, ...], Any]]:
    from lottery.analysis.results import SERIES

    return df.groupby(list(SERIES), sort=True)


def folders_of(df: Any) -> dict[tuple[str, str], Path | None]:
    """(experiment, hash) -> its ``<root>/<name>/<hash>`` folder, found above the rows'
    ``path`` (None for rows from W&B, whose series are then named by hash)."""
    folders: dict[tuple[str, str], Path | None] = {}
    for experiment, digest, path in df[["experiment", "hash", "path"]].itertuples(index=False):
        key = (str(experiment), str(digest))
        if folders.get(key) is None:
            folders[key] = experiment_folder(path, str(digest)) if isinstance(path, str) else None
    return folders


def _curves(df: Any, metrics: Sequence[str], band: str | None) -> list[Curve]:
    from lottery.analysis.results import aggregate

    if band not in BANDS:
        raise ValueError(f"band={band!r}; choose one of {BANDS}")
    return curves_from_stats(aggregate(df).to_dict("records"), metrics, band)


def plot_accuracy_vs_weights(
    df: Any,
    path: str | Path,
    *,
    metric: str | Sequence[str] = "test_accuracy",
    band: str | None = "std",
    title: str = "",
) -> tuple[Path, Path]:
    """Test accuracy (%) against % weights remaining, one line per experiment/hash/branch.

    ``df`` is :func:`~lottery.analysis.results.load_results`'s frame; lines are means over
    replicates with a band of ± one standard deviation (``band="std"``), the range
    (``"minmax"``, as Frankle & Carbin's error bars) or none (``None``). ``metric`` is one or
    more of ``test_accuracy``, ``early_stop_test_accuracy`` (dashed, in a key of its own).
    The figure is the store's plot's (:mod:`lottery.analysis.sparsity_figure`): series named
    by experiment and the overrides that differ, hashes in a footnote, legends outside.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    curves = _curves(df, metrics, band)
    return save_figure(sparsity_accuracy_figure(curves, folders_of(df), metrics, title), path)


def plot_early_stopping(
    df: Any, path: str | Path, *, band: str | None = "std", title: str = ""
) -> tuple[Path, Path]:
    """Early-stopping iteration (left) and test accuracy there (right) vs % weights remaining.

    The early-stopping iteration is that of minimum validation loss (Frankle & Carbin 2019,
    Fig. 4). Raises :class:`ValueError` when no level has one (``dataset.validation_size=0``).
    Series, legend and footnote as in :func:`plot_accuracy_vs_weights`.
    """
    df = df[df["early_stop_iteration"].notna()]
    panels = (("early_stop_iteration", 1.0), ("early_stop_test_accuracy", 100.0))
    curves = _curves(df, [metric for metric, _ in panels], band) if len(df) else []
    if not curves:
        raise ValueError("no early-stopping iterations (runs without a validation set)")
    curves = join_controls_to_dense(curves)
    labels, hashes = series_names([c.key for c in curves], folders_of(df))
    curves = by_label(curves, labels)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, (metric, scale) in zip((left, right), panels, strict=True):
        handles, _ = draw_curves(ax, curves, labels, [metric], scale)
        weights_axis(ax, np.concatenate([c.weights for c in curves]))
    left.set_ylabel("early-stop iteration (min. validation loss)")
    right.set_ylabel("test accuracy at early stop (%)")
    fig.suptitle(title)
    fig.tight_layout()
    legends_outside(right, handles, [])
    footnote(left, hashes)
    return save_figure(fig, path)


def pick_levels(levels: Iterable[int], most: int = 6) -> list[int]:
    """At most ``most`` levels spread evenly from the first to the last."""
    levels = sorted(set(int(level) for level in levels))
    if len(levels) <= most:
        return levels
    picks = np.unique(np.round(np.linspace(0, len(levels) - 1, most)).astype(int))
    return [levels[i] for i in picks]


def plot_training_curves(
    metrics: Any,
    path: str | Path,
    *,
    levels: Iterable[int] | None = None,
    metric: str = "test/accuracy",
    band: str | None = "std",
    title: str = "",
) -> tuple[Path, Path]:
    """``metric`` over training iterations for a few levels (Frankle & Carbin 2019, Fig. 3).

    ``metrics`` is :func:`~lottery.analysis.results.load_metrics`'s frame; one panel per
    experiment/hash/branch, one line per level labelled by its % weights remaining, the mean
    over replicates with a band (``band`` as in :func:`plot_accuracy_vs_weights`).
    ``levels`` defaults to at most six levels from dense to the sparsest.
    """
    if metrics.empty or metric not in metrics.columns:
        raise ValueError(f"no {metric!r} values to plot")
    groups = list(_series(metrics))
    chosen_all = pick_levels(metrics["level"]) if levels is None else sorted(set(levels))
    scale = 100.0 if metric.endswith("accuracy") else 1.0
    fig, axes = plt.subplots(
        1, len(groups), figsize=(6.5 * len(groups), 4.2), dpi=120, squeeze=False, sharey=True
    )
    cmap = plt.get_cmap("viridis")
    for ax, (key, rows) in zip(axes[0], groups, strict=True):
        present = [lv for lv in chosen_all if lv in set(rows["level"])]
        for index, level in enumerate(present):
            at = rows[rows["level"] == level]
            by_it = at.groupby("iteration")[metric].agg(["mean", "std", "min", "max", "count"])
            by_it = by_it[by_it["count"] > 0]
            x = by_it.index.to_numpy(float)
            color = cmap(index / max(1, len(present) - 1) * 0.9)
            weights = float(at["weights_remaining_pct"].iloc[0])
            n = int(at["replicate"].nunique())
            ax.plot(x, by_it["mean"] * scale, color=color, label=f"{weights:.3g}% (n={n})")
            if band is not None:
                stats = by_it.rename(columns=lambda c: f"{metric}_{c}")
                _band(ax, x, stats, metric, band, scale, color=color)
        experiment, digest, branch = key
        ax.set_title(f"{experiment} [{digest}]" + ("" if branch == "imp" else f" {branch}"))
        ax.set_xlabel("training iteration")
        ax.grid(True, alpha=0.3)
        ax.legend(title="weights remaining", fontsize="small")
    axes[0][0].set_ylabel(metric.replace("/", " ") + (" (%)" if scale == 100.0 else ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_deployment(rows: Sequence[dict[str, Any]], path: str | Path) -> tuple[Path, Path]:
    """Test accuracy against size on disk and against CPU latency (batch 256), one point
    per level of the :func:`~lottery.analysis.results.load_deployment` rows, one line per
    experiment/hash/replicate and way of storing or running it."""
    fig, (by_size, by_latency) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        series[(row["experiment"], row["hash"], str(row["replicate"]))].append(row)
    for index, (key, levels) in enumerate(sorted(series.items())):
        levels = sorted(levels, key=lambda r: r["level"])
        name = "/".join(key) if len(series) > 1 else ""
        acc = [100 * r["test_accuracy"] for r in levels]
        int8 = [100 * (r.get("int8") or {}).get("test_accuracy", np.nan) for r in levels]
        style = ("-", "--", ":", "-.")[index % 4]  # one line style per series, a colour per way
        for color, (store, accuracy) in enumerate(
            (("dense_float", acc), ("sparse", acc), ("sparse_int8", int8))
        ):
            kb = [(r["bytes"].get(store) or np.nan) / 1024 for r in levels]
            if not np.all(np.isnan(kb)):
                by_size.plot(kb, accuracy, style, marker="o", ms=3, color=f"C{color}",
                             label=f"{name} {store}".strip())
        for color, way in enumerate(("dense", "sparse_bcoo", "compacted", "int8")):
            ms = [(r["latency"].get(way) or {}).get("batch_256_ms", np.nan) for r in levels]
            accuracy = int8 if way == "int8" else acc
            if not np.all(np.isnan(ms)):
                by_latency.plot(ms, accuracy, style, marker="o", ms=3, color=f"C{color}",
                                label=f"{name} {way}".strip())
    by_size.set(xscale="log", xlabel="size on disk (KB)", ylabel="test accuracy (%)",
                title="accuracy against size")
    by_latency.set(xscale="log", xlabel="CPU latency, batch 256 (ms)",
                   title="accuracy against latency")
    for ax in (by_size, by_latency):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written = save_figure(fig, path)
    plt.close(fig)
    return written
