"""The sparsity–accuracy figure, drawn one way for the store's own plot (``curve.csv`` rows,
after every run), ``python -m lottery.report`` and ``experiments/sparsity_accuracy.ipynb``.

* one colour and one legend entry per series (experiment, hash, branch), labelled by
  :func:`lottery.analysis.names.series_names` (the hashes in a footnote under the axes);
* a second metric (accuracy at early stop) is a dashed line with hollow markers in the
  series' colour, explained once in a key of line styles, not a second entry per series;
* the controls (branches) start at the dense level 0 they share with the main line;
* both legends sit to the right of the axes, never over the data.

No pandas here: the training command draws its plot from the curve rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from lottery.analysis.names import SeriesKey, series_names

DENSE_BRANCH = "imp"
BANDS = ("std", "minmax", None)
# metric -> (how the key names it, line style, hollow markers)
METRIC_STYLES = {
    "test_accuracy": ("final", "-", False),
    "early_stop_test_accuracy": ("at early stop (min. validation loss)", "--", True),
}


@dataclass
class Curve:
    """One series, level by level: % weights remaining and, per metric, the mean over
    replicates and the band's low and high edges (fractions in [0, 1])."""

    key: SeriesKey
    levels: list[int]
    weights: np.ndarray
    count: int
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    low: dict[str, np.ndarray] = field(default_factory=dict)
    high: dict[str, np.ndarray] = field(default_factory=dict)


def _band_edges(record: Mapping[str, Any], metric: str, band: str) -> tuple[float, float]:
    mean = float(record[f"{metric}_mean"])
    if band == "std":
        std = float(record[f"{metric}_std"])
        std = 0.0 if np.isnan(std) else std
        return mean - std, mean + std
    if band == "minmax":
        return float(record[f"{metric}_min"]), float(record[f"{metric}_max"])
    raise ValueError(f"band={band!r}; choose one of {BANDS}")


def curves_from_stats(
    records: Iterable[Mapping[str, Any]], metrics: Sequence[str], band: str | None = "std"
) -> list[Curve]:
    """Curves from rows of :func:`lottery.analysis.results.aggregate`'s columns (as dicts);
    a metric is kept for a series only where every level of it has a value."""
    by_series: dict[SeriesKey, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        key = (str(record["experiment"]), str(record["hash"]), str(record["branch"]))
        by_series[key].append(record)
    curves = []
    for key in sorted(by_series):
        rows = sorted(by_series[key], key=lambda r: int(r["level"]))
        curve = Curve(
            key=key,
            levels=[int(r["level"]) for r in rows],
            weights=np.array([float(r["weights_remaining_pct"]) for r in rows]),
            count=max(int(r["count"]) for r in rows),
        )
        for metric in metrics:
            if f"{metric}_mean" not in rows[0]:
                continue
            means = np.array([float(r[f"{metric}_mean"]) for r in rows])
            if np.isnan(means).any():
                continue
            curve.mean[metric] = means
            if band is not None:
                edges = np.array([_band_edges(r, metric, band) for r in rows])
                curve.low[metric], curve.high[metric] = edges.T
        curves.append(curve)
    return curves


def aggregate_rows(
    rows: Iterable[Mapping[str, Any]], experiment: str, digest: str, metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """``aggregate``'s statistics of one experiment's curve rows, without pandas (std with
    ddof=1, NaN for one replicate, as ``aggregate``)."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(str(row.get("branch") or DENSE_BRANCH), int(row["level"]))].append(row)
    records = []
    for (branch, level), group in sorted(groups.items()):
        record: dict[str, Any] = {
            "experiment": experiment,
            "hash": digest,
            "branch": branch,
            "level": level,
            "weights_remaining_pct": np.mean([float(r["weights_remaining_pct"]) for r in group]),
            "count": len(group),
        }
        for metric in metrics:
            values = [float(r[metric]) for r in group if r.get(metric) not in (None, "")]
            values = values or [np.nan]
            record[f"{metric}_mean"] = float(np.mean(values))
            record[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
            record[f"{metric}_min"], record[f"{metric}_max"] = min(values), max(values)
        records.append(record)
    return records


def join_controls_to_dense(curves: list[Curve]) -> list[Curve]:
    """Each control (a branch without level 0) starts at the dense point of its
    experiment's main line, as it does in training: they share level 0."""
    dense = {c.key[:2]: c for c in curves if c.key[2] == DENSE_BRANCH and 0 in c.levels}
    for curve in curves:
        main = dense.get(curve.key[:2])
        if curve.key[2] == DENSE_BRANCH or main is None or 0 in curve.levels:
            continue
        at = main.levels.index(0)
        curve.levels = [0, *curve.levels]
        curve.weights = np.concatenate([[main.weights[at]], curve.weights])
        pairs = ((curve.mean, main.mean), (curve.low, main.low), (curve.high, main.high))
        for values, start in pairs:
            for metric in list(values):
                if metric in start:
                    values[metric] = np.concatenate([[start[metric][at]], values[metric]])
                else:  # the main line lacks it: the control's is not drawn either
                    del values[metric]
    return curves


def weights_axis(ax: Any, weights: Iterable[float]) -> None:
    """Log x axis of % weights remaining, dense (100%) on the left, ticks at the levels."""
    ticks = np.array(sorted({round(float(w), 6) for w in weights}, reverse=True))
    ax.set_xscale("log")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    if len(ticks):
        ax.set_xticks(ticks[:: max(1, int(np.ceil(len(ticks) / 8)))])
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (%)")
    ax.grid(True, which="both", alpha=0.3)


def legends_outside(ax: Any, handles: list[Any], style_key: list[Any]) -> None:
    """The series legend to the right of the axes and, under it, the key of line styles."""
    series = ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
        fontsize="small", frameon=False,
    )
    if not style_key:
        return
    ax.add_artist(series)
    series.set_clip_on(False)  # add_artist clips it to the axes: the saved area would too
    renderer = ax.figure.canvas.get_renderer()
    bottom = series.get_window_extent(renderer).transformed(ax.transAxes.inverted()).y0
    ax.legend(
        handles=style_key, loc="upper left", bbox_to_anchor=(1.02, bottom - 0.04),
        borderaxespad=0.0, fontsize="small", frameon=False, title="test accuracy",
        title_fontsize="small", alignment="left",
    )


def footnote(ax: Any, text: str) -> None:
    """``text`` in small grey type under the x axis label, left-aligned with the axes."""
    if text:
        ax.annotate(
            text, xy=(0.0, 0.0), xycoords=("axes fraction", ax.xaxis.label), xytext=(0, -6),
            textcoords="offset points", ha="left", va="top", fontsize="x-small", color="0.35",
        )


def _style(metric: str, metrics: int) -> tuple[str, str, bool]:
    """(its name in the key, line style, hollow markers): solid when it is the only one."""
    if metrics == 1:
        return metric.replace("_", " "), "-", False
    return METRIC_STYLES.get(metric, (metric.replace("_", " "), ":", False))


def by_label(curves: list[Curve], labels: Mapping[SeriesKey, str]) -> list[Curve]:
    """Series in reading order: by experiment and settings, the main line before its
    controls."""

    def order(curve: Curve) -> tuple[str, str, bool, str]:
        experiment, _, branch = curve.key
        run = labels[curve.key].removesuffix(branch)
        return experiment, run, branch != DENSE_BRANCH, branch

    return sorted(curves, key=order)


def draw_curves(
    ax: Any, curves: list[Curve], labels: Mapping[SeriesKey, str], metrics: Sequence[str],
    scale: float = 100.0,
) -> tuple[list[Any], list[Any]]:
    """Each curve in its colour, its first metric with a band; returns (one legend handle
    per series, the key of the metrics' line styles when more than one is drawn)."""
    handles, drawn = [], []
    for index, curve in enumerate(curves):
        color = f"C{index % 10}"
        present = [m for m in metrics if m in curve.mean]
        for position, metric in enumerate(present):
            _, style, hollow = _style(metric, len(metrics))
            ax.plot(
                curve.weights, curve.mean[metric] * scale, style, color=color, marker="o",
                markersize=4, markerfacecolor="none" if hollow else color,
            )
            legible = position == 0 or len(curves) == 1  # more bands than that are not
            if legible and metric in curve.low:
                ax.fill_between(
                    curve.weights, curve.low[metric] * scale, curve.high[metric] * scale,
                    color=color, alpha=0.2, linewidth=0,
                )
            drawn += [metric] if metric not in drawn else []
        label = f"{labels[curve.key]} (n={curve.count})"
        handles.append(Line2D([], [], color=color, marker="o", markersize=4, label=label))
    style_key = []
    if len(drawn) > 1:
        for metric in drawn:
            name, style, hollow = _style(metric, len(metrics))
            style_key.append(Line2D(
                [], [], color="0.3", linestyle=style, marker="o", markersize=4,
                markerfacecolor="none" if hollow else "0.3", label=name,
            ))
    return handles, style_key


def sparsity_accuracy_figure(
    curves: list[Curve],
    folders: Mapping[tuple[str, str], Path | None],
    metrics: Sequence[str] = ("test_accuracy",),
    title: str = "",
) -> Any:
    """The figure (not saved): test accuracy (%) against % weights remaining."""
    if not curves:
        raise ValueError("no results to plot")
    curves = join_controls_to_dense(curves)
    labels, hashes = series_names([c.key for c in curves], folders)
    curves = by_label(curves, labels)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    handles, style_key = draw_curves(ax, curves, labels, metrics)
    weights_axis(ax, np.concatenate([c.weights for c in curves]))
    ylabel = "test accuracy" if len(metrics) > 1 else metrics[0].replace("_", " ")
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_title(title)
    legends_outside(ax, handles, style_key)
    footnote(ax, hashes)
    return fig
