"""The results store: one folder per experiment hash, replicate, level and branch.

::

    <results_root>/<name>/
      dense_<hash0>/                   level 0, shared by every pruning setting of the same
          config.yaml, hashed.json     dense training (hash of everything but pruning.*)
          replicate_<seed>/
              level_0/                 the dense training (files as below)
              rewind_<k>it.npz         weights and BatchNorm statistics at step k
      <hash>/
          config.yaml, hashed.json     the resolved config of the first run, the hashed values
          curve.csv                    one row per replicate, level and branch
          sparsity_accuracy.png
          replicate_<seed>/
              level_0 -> ../../dense_<hash0>/replicate_<seed>/level_0     (a symbolic link)
              level_<L>/
                  mask.npz             bool mask, keys are parameter paths (written first)
                  metrics.jsonl        one JSON object per evaluation
                  params.npz           final weights ("params/…") and statistics ("batch_stats/…")
                  summary.json         written last: a level is finished when it parses
                  branch_<name>_<hash>/    the same files for an extra training of the level
              level_<L>.partial/       unfinished: mask, metrics so far, checkpoints/ (orbax)

A level (or branch) is built in its ``.partial`` folder and renamed into place when whole,
so a killed run never leaves a level that looks finished; the next run resumes the partial
folder from its newest checkpoint. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lottery.atomic import atomic_write_json, atomic_write_npz, atomic_write_text
from lottery.pruning import flatten, unflatten

CURVE_COLUMNS = (
    "replicate",
    "level",
    "branch",
    "weights_remaining_pct",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
    "compression_ratio",
    "flops",
    "theoretical_speedup",
    "instability_barrier",
)
MAIN_BRANCH = "imp"
# Names of finished level and branch folders (not ``.partial``, not set aside).
FINISHED_NAME = re.compile(r"level_\d+|branch_[A-Za-z0-9_]+_[0-9a-f]+")


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


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The ``summary.json`` of a level or branch folder, or None if missing or unreadable."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def npz_readable(path: Path) -> bool:
    """Whether ``path`` is a whole ``.npz``: a zip whose directory (written last) reads."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return True


def remove_stale_temp_files(folder: Path, older_than: float = 600.0) -> int:
    """Delete the temp files of atomic writes that a killed run left under ``folder``
    (``.<name>.<random>.tmp``), if older than ``older_than`` seconds (an atomic write takes
    far less, so a live writer's file is never taken). Returns how many."""
    removed, now = 0, time.time()
    for file in folder.rglob(".*.tmp"):
        try:
            if file.is_file() and now - file.stat().st_mtime > older_than:
                file.unlink()
                removed += 1
        except FileNotFoundError:  # its writer finished meanwhile
            continue
    return removed


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class PartialFolder:
    """An unfinished level or branch: ``<final>.partial/``, renamed to ``<final>`` when whole.

    It outlives the process that made it: a run started again finds the mask, the metrics
    and the checkpoints where the killed one left them.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + ".partial")
        self._metrics: io.TextIOWrapper | None = None

    @property
    def mask_file(self) -> Path:
        return self.path / "mask.npz"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def has_mask(self) -> bool:
        return self.mask_file.is_file()

    def save_mask(self, mask: Any) -> None:
        save_tree_npz(self.mask_file, {"mask": mask})

    def load_mask(self) -> Any:
        return load_tree_npz(self.mask_file)["mask"]

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Replace the metrics with ``history`` (a resumed run's evaluations so far)."""
        self.close()
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
        atomic_write_text(self.path / "metrics.jsonl", lines)

    def log(self, record: dict[str, Any]) -> None:
        """Append one evaluation's metrics."""
        if self._metrics is None:
            self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()

    def save_weights(self, params: Any, batch_stats: Any) -> None:
        save_tree_npz(self.path / "params.npz", {"params": params, "batch_stats": batch_stats})

    def is_whole(self) -> bool:
        """Everything written: only the rename was missing (a kill at the very end)."""
        return (
            read_summary(self.path) is not None
            and self.has_mask()
            and (self.path / "params.npz").is_file()
        )

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary (last), drop the checkpoints, rename the folder into place."""
        self.close()
        atomic_write_json(self.path / "summary.json", summary)
        self.publish()

    def publish(self) -> None:
        """Rename a whole partial folder into place (its checkpoints are no longer needed)."""
        self.close()
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        set_aside(self.final, "unfinished")
        self.path.rename(self.final)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def set_aside(folder: Path, why: str, detail: str = "") -> None:
    """Move an unusable file or folder out of the way (never delete results), with a warning
    line; ``why`` is one word that goes into the new name (``level_3.unreadable-1``)."""
    if not folder.exists() and not folder.is_symlink():
        return
    n = 1
    while (aside := folder.with_name(f"{folder.name}.{why}-{n}")).exists():
        n += 1
    folder.rename(aside)
    detail = f" ({detail})" if detail else ""
    warn(f"{folder} was {why}{detail}; moved it to {aside.name} and will redo it")


def folder_done(folder: Path) -> bool:
    """A finished level or branch: its summary parses, its mask and weights are whole files."""
    return (
        read_summary(folder) is not None
        and npz_readable(folder / "mask.npz")
        and npz_readable(folder / "params.npz")
    )


class ReplicateStore:
    """The folder of one replicate (seed) of an experiment, or of its dense level 0."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def level_path(self, level: int) -> Path:
        return self.path / f"level_{level}"

    def branch_path(self, level: int, name: str, digest: str) -> Path:
        return self.level_path(level) / f"branch_{name}_{digest}"

    def is_done(self, level: int) -> bool:
        """A finished level: its summary parses, its mask and weights are whole files."""
        return folder_done(self.level_path(level))

    def summary(self, level: int) -> dict[str, Any]:
        return json.loads((self.level_path(level) / "summary.json").read_text())

    def mask(self, level: int) -> Any:
        return load_tree_npz(self.level_path(level) / "mask.npz")["mask"]

    def params(self, level: int) -> tuple[Any, Any]:
        trees = load_tree_npz(self.level_path(level) / "params.npz")
        return trees.get("params", {}), trees.get("batch_stats", {})

    def partial_level(self, level: int) -> PartialFolder:
        """The unfinished folder of ``level``; a level folder without a readable summary
        (not finished, yet not ``.partial``) is set aside first."""
        final = self.level_path(level)
        if (final.exists() or final.is_symlink()) and not self.is_done(level):
            set_aside(final, "unfinished")
        return PartialFolder(final)

    def partial_branch(self, level: int, name: str, digest: str) -> PartialFolder:
        return PartialFolder(self.branch_path(level, name, digest))

    def link_level(self, level: int, target: Path) -> None:
        """Make ``level_<level>`` a relative symbolic link to another store's level folder."""
        link = self.level_path(level)
        if link.is_symlink() and link.resolve() == target.resolve():
            return
        set_aside(link, "replaced")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)

    def rewind_file(self, step: int) -> Path:
        return self.path / f"rewind_{step}it.npz"

    def save_rewind_point(self, step: int, params: Any, batch_stats: Any) -> None:
        save_tree_npz(self.rewind_file(step), {"params": params, "batch_stats": batch_stats})

    def rewind_point(self, step: int) -> tuple[Any, Any] | None:
        """The weights and statistics at ``step``, or None if missing or unreadable."""
        try:
            trees = load_tree_npz(self.rewind_file(step))
        except FileNotFoundError:
            return None
        except Exception as error:  # a truncated or garbled file: made again from level 0
            set_aside(self.rewind_file(step), "unreadable", type(error).__name__)
            return None
        return trees.get("params", {}), trees.get("batch_stats", {})


def _yaml_readable(path: Path) -> bool:
    import yaml

    try:
        return isinstance(yaml.safe_load(path.read_text()), dict)
    except (OSError, ValueError, yaml.YAMLError):
        return False


class ExperimentStore:
    """The folder of one experiment, ``<results_root>/<name>/<hash>``, and of its level 0,
    ``<results_root>/<name>/dense_<hash0>``."""

    def __init__(
        self, results_root: str | Path, name: str, digest: str, dense_digest: str | None = None
    ) -> None:
        root = Path(results_root).expanduser().resolve() / name
        self.path = root / digest
        self.digest = digest
        self.dense_path = root / f"dense_{dense_digest or digest}"

    def replicate(self, seed: int) -> ReplicateStore:
        return ReplicateStore(self.path / f"replicate_{seed}")

    def dense_replicate(self, seed: int) -> ReplicateStore:
        return ReplicateStore(self.dense_path / f"replicate_{seed}")

    def write_config(
        self, config_yaml: str, hashed: dict[str, Any], dense_hashed: dict[str, Any]
    ) -> None:
        """Record the config (once: the first run's stays, unless unreadable) and the hashed
        values, for the experiment and for its dense level 0."""
        for folder, values in ((self.path, hashed), (self.dense_path, dense_hashed)):
            if not _yaml_readable(folder / "config.yaml"):
                atomic_write_text(folder / "config.yaml", config_yaml)
            atomic_write_json(folder / "hashed.json", values)

    def summaries(self) -> list[dict[str, Any]]:
        """Every finished level's and branch's summary, by replicate, level and branch.

        Level 0 is read through its link to the dense folder, and named by this experiment.
        """
        found = []
        patterns = ("replicate_*/level_*/summary.json", "replicate_*/level_*/branch_*/summary.json")
        for pattern in patterns:
            for file in self.path.glob(pattern):
                level = file.parent if pattern.count("/") == 2 else file.parent.parent
                summary = read_summary(file.parent)
                if summary is None or not FINISHED_NAME.fullmatch(file.parent.name):
                    continue
                if not FINISHED_NAME.fullmatch(level.name):
                    continue
                summary["hash"] = self.digest
                summary.setdefault("branch", MAIN_BRANCH)
                found.append(summary)
        return sorted(
            found,
            key=lambda s: (s["replicate"], s["level"], s["branch"] != MAIN_BRANCH, s["branch"]),
        )

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
