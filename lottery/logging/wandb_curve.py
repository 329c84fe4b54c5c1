"""The experiment's sparsity–accuracy curve for W&B, and a readable group name.

W&B's own line panels need a logged x axis, so the figure this framework exists for (test
accuracy against weights remaining, one line per branch) goes to W&B as data: a
``wandb.Table`` of the curve aggregated over replicates, and a ``wandb.plot.line_series``
drawn from it (see :func:`curve_media`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from lottery.config import Config
from lottery.store.hashing import hashed_values

CURVE_TABLE_COLUMNS = (
    "branch",
    "level",
    "weights_remaining_pct",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_accuracy_min",
    "test_accuracy_max",
    "replicates",
)


def aggregate_curve(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """curve.csv's rows (one per replicate, level and branch) as one row per branch and
    level, in :data:`CURVE_TABLE_COLUMNS`: means over replicates, and the spread (``std`` is
    the sample standard deviation, 0.0 for one replicate). Branch ``imp`` first."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("test_accuracy") in (None, ""):
            continue
        groups[(str(row.get("branch") or "imp"), int(row["level"]))].append(row)
    table = []
    for (branch, level), members in sorted(groups.items(), key=lambda g: (g[0][0] != "imp", g[0])):
        accuracies = [float(m["test_accuracy"]) for m in members]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        weights = statistics.fmean(float(m["weights_remaining_pct"]) for m in members)
        table.append([branch, level, weights, statistics.fmean(accuracies), spread,
                      min(accuracies), max(accuracies), len(accuracies)])
    return table


def curve_media(rows: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """What a summary run logs: ``curve`` (the table) and ``sparsity_accuracy`` (a line per
    branch of mean test accuracy against weights remaining)."""
    import wandb

    table = aggregate_curve(rows)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for branch, _, weights, accuracy, *_ in table:
        xs, ys = series.setdefault(branch, ([], []))
        xs.append(weights)
        ys.append(accuracy)
    chart = wandb.plot.line_series(
        xs=[xs for xs, _ in series.values()],
        ys=[ys for _, ys in series.values()],
        keys=list(series),
        title=title,
        xname="weights remaining (%)",
    )
    return {
        "curve": wandb.Table(columns=list(CURVE_TABLE_COLUMNS), data=table),
        "sparsity_accuracy": chart,
    }


def sparsest_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """Mean test accuracy of the sparsest finished level of the main line (what a sweep's
    ``metric`` can maximise), or None before any level."""
    main = [row for row in aggregate_curve(rows) if row[0] == "imp"]
    return main[-1][3] if main else None


def command_line_overrides() -> list[str] | None:
    """The Hydra overrides of this job (``key=value``), or None outside a Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        return list(HydraConfig.get().overrides.task)
    except Exception:  # an unusual Hydra set-up: fall back to the hash
        return None


def readable_group(cfg: Config, digest: str) -> str:
    """The W&B group of an experiment: its name and the command-line overrides that change
    results (``mnist1d_imp pruning.fraction=0.5``); outside a Hydra job (``lottery.run``,
    ``experiment.run``) the name and the hash."""
    overrides = command_line_overrides()
    if overrides is None:
        return f"{cfg.name} #{digest}"
    hashed = hashed_values(cfg)
    kept = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in hashed:
            kept.append(f"{key}={value}")
    return " ".join([cfg.name, *kept])
