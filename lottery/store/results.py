"""The results store: one folder per experiment hash, replicate and level.

::

    <results_root>/<name>/<hash>/
        config.yaml                  the resolved config of the first run
        hashed.json                  the values the hash was made of
        curve.csv                    one row per replicate and level (rebuilt from summaries)
        sparsity_accuracy.png
        replicate_<seed>/
            rewind_point.npz         weights and BatchNorm statistics at the rewind step
            level_<L>/
                metrics.jsonl        one JSON object per evaluation
                summary.json         written last: its presence marks the level finished
                mask.npz             bool mask, keys are parameter paths
                params.npz           final weights ("params/…") and statistics ("batch_stats/…")

A level is written into ``level_<L>.partial/`` and renamed into place when complete, so a
killed run never leaves a level that looks finished; the partial folder is cleared on the
next start. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lottery.atomic import atomic_write_json, atomic_write_npz, atomic_write_text
from lottery.pruning import flatten, unflatten

CURVE_COLUMNS = (
    "replicate",
    "level",
    "weights_remaining_pct",
    "test_accuracy",
    "best_test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
)


def save_tree_npz(path: Path, trees: dict[str, Any]) -> None:
    """Save pytrees under prefixes: ``{"params": p}`` → keys ``params/fc1/kernel`` …."""
    arrays = {}
    for prefix, tree in trees.items():
        for key, value in flatten(tree).items():
            arrays[f"{prefix}/{key}"] = np.asarray(value)
    atomic_write_npz(path, arrays)


def load_tree_npz(path: Path) -> dict[str, Any]:
    """Inverse of :func:`save_tree_npz`; a prefix with no arrays comes back as ``{}``."""
    with np.load(path) as data:
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            prefix, _, rest = key.partition("/")
            grouped.setdefault(prefix, {})[rest] = data[key]
    return {prefix: unflatten(flat) for prefix, flat in grouped.items()}


class LevelWriter:
    """Writes one level into its ``.partial`` folder and publishes it when complete."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = final.with_name(final.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self._metrics = open(self.partial / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        """Append one evaluation's metrics."""
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()

    def save_weights(self, mask: Any, params: Any, batch_stats: Any) -> None:
        """Write the level's mask and final weights."""
        save_tree_npz(self.partial / "mask.npz", {"mask": mask})
        save_tree_npz(self.partial / "params.npz", {"params": params, "batch_stats": batch_stats})

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary (last), then rename the folder into place."""
        self._metrics.close()
        atomic_write_json(self.partial / "summary.json", summary)
        self.partial.rename(self.final)

    def abandon(self) -> None:
        """Remove the partial folder (a run that stops with an error)."""
        self._metrics.close()
        shutil.rmtree(self.partial, ignore_errors=True)


class ReplicateStore:
    """The folder of one replicate (seed) of an experiment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def level_path(self, level: int) -> Path:
        return self.path / f"level_{level}"

    def is_done(self, level: int) -> bool:
        return (self.level_path(level) / "summary.json").is_file()

    def summary(self, level: int) -> dict[str, Any]:
        return json.loads((self.level_path(level) / "summary.json").read_text())

    def mask(self, level: int) -> Any:
        return load_tree_npz(self.level_path(level) / "mask.npz")["mask"]

    def params(self, level: int) -> tuple[Any, Any]:
        trees = load_tree_npz(self.level_path(level) / "params.npz")
        return trees.get("params", {}), trees.get("batch_stats", {})

    def begin_level(self, level: int) -> LevelWriter:
        return LevelWriter(self.level_path(level))

    @property
    def rewind_file(self) -> Path:
        return self.path / "rewind_point.npz"

    def save_rewind_point(self, params: Any, batch_stats: Any) -> None:
        save_tree_npz(self.rewind_file, {"params": params, "batch_stats": batch_stats})

    def rewind_point(self) -> tuple[Any, Any] | None:
        if not self.rewind_file.is_file():
            return None
        trees = load_tree_npz(self.rewind_file)
        return trees.get("params", {}), trees.get("batch_stats", {})


class ExperimentStore:
    """The folder of one experiment: ``<results_root>/<name>/<hash>``."""

    def __init__(self, results_root: str | Path, name: str, digest: str) -> None:
        self.path = Path(results_root).expanduser().resolve() / name / digest

    def replicate(self, seed: int) -> ReplicateStore:
        return ReplicateStore(self.path / f"replicate_{seed}")

    def write_config(self, config_yaml: str, hashed: dict[str, Any]) -> None:
        """Record the config (once: the first run's stays) and the hashed values."""
        if not (self.path / "config.yaml").exists():
            atomic_write_text(self.path / "config.yaml", config_yaml)
        atomic_write_json(self.path / "hashed.json", hashed)

    def summaries(self) -> list[dict[str, Any]]:
        """Every finished level's summary, by replicate then level."""
        found = []
        for file in self.path.glob("replicate_*/level_*/summary.json"):
            found.append(json.loads(file.read_text()))
        return sorted(found, key=lambda s: (s["replicate"], s["level"]))

    @property
    def curve_file(self) -> Path:
        return self.path / "curve.csv"

    def write_curve(self) -> list[dict[str, Any]]:
        """Rebuild ``curve.csv`` from the level summaries; returns its rows."""
        rows = [{column: s.get(column) for column in CURVE_COLUMNS} for s in self.summaries()]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.curve_file, buffer.getvalue())
        return rows
