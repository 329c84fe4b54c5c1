"""Sparsity–accuracy plots in the papers' style (weights remaining on a log x axis)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter


def plot_sparsity_accuracy(
    rows: Iterable[dict[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Test accuracy against % weights remaining (mean ± std over replicates), saved as PNG.

    The x axis runs from dense (100%) on the left to sparse on the right, log-scaled, as in
    Frankle & Carbin (2019).
    """
    by_level: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_level[int(row["level"])].append(row)
    levels = sorted(by_level)
    x = np.array(
        [np.mean([float(r["weights_remaining_pct"]) for r in by_level[lv]]) for lv in levels]
    )
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label in (("test_accuracy", "final"), ("early_stop_test_accuracy", "at early stop")):
        values = [
            [float(r[key]) * 100 for r in by_level[lv] if r.get(key) not in (None, "")]
            for lv in levels
        ]
        if not all(values):
            continue
        mean = np.array([np.mean(v) for v in values])
        std = np.array([np.std(v) for v in values])
        replicates = max(len(v) for v in values)
        ax.plot(x, mean, marker="o", label=f"test accuracy, {label} (n={replicates})")
        if replicates > 1:
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.set_xticks(x[:: max(1, len(x) // 8)])
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
