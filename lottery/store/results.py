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

A level is finished when its summary parses and holds the keys every reader needs, and its
mask and weights are whole files; given the network's :class:`Layout`, their arrays must also
have the network's paths, shapes and dtypes (a readable file of another network is no result).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery.atomic import (
    atomic_write_json,
    atomic_write_npz,
    atomic_write_text,
    this_process_writes,
)
from lottery.pruning import flatten, unflatten
from lottery.store.files import (
    CONFIG_FILE,
    CURVE_FILE,
    HASHED_FILE,
    MASK_FILE,
    METRICS_FILE,
    PARAMS_FILE,
    SUMMARY_FILE,
)

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
    "instability_barrier_recompute",  # branch.instability.batchnorm=both: the second line
)
MAIN_BRANCH = "imp"
# Names of finished level and branch folders (not ``.partial``, not set aside).
FINISHED_NAME = re.compile(r"level_\d+|branch_[A-Za-z0-9_]+_[0-9a-f]+")
# What every reader of a summary needs (the store's curve, the report, lottery.load), by type.
SUMMARY_KEYS: dict[str, type | tuple[type, ...]] = {
    "experiment": str,
    "replicate": int,
    "level": int,
    "weights_remaining_pct": (int, float),
    "test_accuracy": (int, float),
    "input_shape": list,
    "num_classes": int,
}


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


def summary_problem(summary: Any) -> str | None:
    """What makes a parsed summary unusable (not an object, a key missing or mistyped)."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    for key, kind in SUMMARY_KEYS.items():
        value = summary.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key!r} is missing" if key not in summary else f"{key!r} is {value!r}"
    return None


def _read_summary(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the summary, None), or (None, what is wrong with the ``summary.json`` of ``folder``)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except FileNotFoundError:
        return None, "no summary.json"
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError too
        return None, f"summary.json is unreadable ({type(error).__name__})"
    problem = summary_problem(summary)
    return (None, f"summary.json: {problem}") if problem else (summary, None)


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The ``summary.json`` of a level or branch folder, or None if missing, unreadable or
    without the keys of :data:`SUMMARY_KEYS`."""
    return _read_summary(folder)[0]


def npz_readable(path: Path) -> bool:
    """Whether ``path`` is a whole ``.npz``: a zip whose directory (written last) reads."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return True


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype in a ``.npz``, from the headers alone (no data read).
    Raises ``OSError``, ``zipfile.BadZipFile`` or ``ValueError`` if it is not whole."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as member:
                version = np.lib.format.read_magic(member)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(member)
            headers[name.removesuffix(".npy")] = (tuple(shape), dtype)
    return headers


def _tree_problem(
    headers: dict[str, tuple[tuple[int, ...], np.dtype]],
    expected: dict[str, tuple[int, ...]],
    is_kind: Any,
    kind: str,
) -> str | None:
    """How arrays (by key) differ from the expected keys and shapes, or from dtype ``kind``."""
    missing, extra = sorted(set(expected) - set(headers)), sorted(set(headers) - set(expected))
    if missing or extra:
        what = f"no {missing[0]}" if missing else f"an unknown array {extra[0]}"
        return f"{what} (not this network's)"
    for key, shape in expected.items():
        found, dtype = headers[key]
        if found != shape:
            return f"{key} has shape {found}, the network's is {shape}"
        if not is_kind(dtype):
            return f"{key} is {dtype}, not {kind}"
    return None


@dataclass(frozen=True)
class Layout:
    """The arrays of a network, path to shape: what a level's ``mask.npz`` (bool, one per
    parameter) and ``params.npz`` (floats, parameters and BatchNorm statistics) must hold."""

    params: dict[str, tuple[int, ...]]
    batch_stats: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, params: Any, batch_stats: Any) -> Layout:
        """The layout of a network's (initial) parameters and statistics."""

        def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
            return {key: tuple(v.shape) for key, v in flatten(tree).items()} if tree else {}

        return cls(shapes(params), shapes(batch_stats))

    def mask_problem(self, path: Path) -> str | None:
        """What in the mask file at ``path`` does not fit the network, or None."""
        expected = {f"mask/{key}": shape for key, shape in self.params.items()}
        return _tree_problem(npz_headers(path), expected, lambda d: d == np.bool_, "bool")

    def params_problem(self, path: Path) -> str | None:
        """What in the weights file at ``path`` does not fit the network, or None."""
        expected = {f"params/{key}": shape for key, shape in self.params.items()}
        expected |= {f"batch_stats/{key}": shape for key, shape in self.batch_stats.items()}
        floats = lambda d: np.issubdtype(d, np.floating)  # noqa: E731
        return _tree_problem(npz_headers(path), expected, floats, "floating point")


def remove_stale_temp_files(folder: Path, older_than: float = 600.0) -> int:
    """Delete the temp files of atomic writes that a killed run left under ``folder``
    (``.<name>.<random>.tmp``), if older than ``older_than`` seconds (an atomic write takes
    far less, so a live writer's file is never taken). Returns how many."""
    removed, now = 0, time.time()
    if not this_process_writes():
        return removed
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
    and the checkpoints where the killed one left them. With a ``layout``, a mask that does
    not fit the network is unreadable (:meth:`load_mask` raises ``ValueError``).
    """

    def __init__(self, final: Path, layout: Layout | None = None) -> None:
        self.final = final
        self.layout = layout
        self.path = final.with_name(final.name + ".partial")
        self._metrics: io.TextIOWrapper | None = None

    @property
    def mask_file(self) -> Path:
        return self.path / MASK_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def has_mask(self) -> bool:
        return self.mask_file.is_file()

    def save_mask(self, mask: Any) -> None:
        save_tree_npz(self.mask_file, {"mask": mask})

    def load_mask(self) -> Any:
        if self.layout is not None and (problem := self.layout.mask_problem(self.mask_file)):
            raise ValueError(f"{self.mask_file}: {problem}")
        return load_tree_npz(self.mask_file)["mask"]

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Replace the metrics with ``history`` (a resumed run's evaluations so far)."""
        self.close()
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
        atomic_write_text(self.path / METRICS_FILE, lines)

    def log(self, record: dict[str, Any]) -> None:
        """Append one evaluation's metrics."""
        if not this_process_writes():
            return
        if self._metrics is None:
            self._metrics = open(self.path / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()

    def save_weights(self, params: Any, batch_stats: Any) -> None:
        save_tree_npz(self.path / PARAMS_FILE, {"params": params, "batch_stats": batch_stats})

    def is_whole(self) -> bool:
        """Everything written: only the rename was missing (a kill at the very end)."""
        return (
            read_summary(self.path) is not None
            and self.has_mask()
            and (self.path / PARAMS_FILE).is_file()
        )

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary (last), drop the checkpoints, rename the folder into place."""
        self.close()
        atomic_write_json(self.path / SUMMARY_FILE, summary)
        self.publish()

    def publish(self) -> None:
        """Rename a whole partial folder into place (its checkpoints are no longer needed)."""
        self.close()
        if not this_process_writes():
            return
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
    if not this_process_writes() or (not folder.exists() and not folder.is_symlink()):
        return
    n = 1
    while (aside := folder.with_name(f"{folder.name}.{why}-{n}")).exists():
        n += 1
    folder.rename(aside)
    detail = f" ({detail})" if detail else ""
    warn(f"{folder} was {why}{detail}; moved it to {aside.name} and will redo it")


def folder_problem(folder: Path, layout: Layout | None = None) -> str | None:
    """Why ``folder`` is not a finished level or branch, or None if it is: its summary
    parses (with :data:`SUMMARY_KEYS`), its mask and weights are whole files and, given the
    network's ``layout``, hold its arrays."""
    summary, problem = _read_summary(folder)
    if summary is None:
        return problem
    for name in (MASK_FILE, PARAMS_FILE):
        if not npz_readable(folder / name):
            return f"{name} is not a whole file"
    if layout is None:
        return None
    checks = ((MASK_FILE, layout.mask_problem), (PARAMS_FILE, layout.params_problem))
    for name, check in checks:
        try:
            problem = check(folder / name)
        except (OSError, zipfile.BadZipFile, ValueError) as error:
            problem = f"an array header is unreadable ({type(error).__name__})"
        if problem is not None:
            return f"{name}: {problem}"
    return None


def folder_done(folder: Path, layout: Layout | None = None) -> bool:
    """A finished level or branch (see :func:`folder_problem`)."""
    return folder_problem(folder, layout) is None


class ReplicateStore:
    """The folder of one replicate (seed) of an experiment, or of its dense level 0.

    With the network's ``layout``, a level whose mask or weights do not fit it is not
    finished (it is set aside and made again)."""

    def __init__(self, path: Path, layout: Layout | None = None) -> None:
        self.path = path
        self.layout = layout

    def level_path(self, level: int) -> Path:
        return self.path / f"level_{level}"

    def branch_path(self, level: int, name: str, digest: str) -> Path:
        return self.level_path(level) / f"branch_{name}_{digest}"

    def is_done(self, level: int) -> bool:
        """A finished level (see :func:`folder_problem`)."""
        return folder_done(self.level_path(level), self.layout)

    def summary(self, level: int) -> dict[str, Any]:
        return json.loads((self.level_path(level) / SUMMARY_FILE).read_text())

    def mask(self, level: int) -> Any:
        return load_tree_npz(self.level_path(level) / MASK_FILE)["mask"]

    def params(self, level: int) -> tuple[Any, Any]:
        trees = load_tree_npz(self.level_path(level) / PARAMS_FILE)
        return trees.get("params", {}), trees.get("batch_stats", {})

    def partial_level(self, level: int) -> PartialFolder:
        """The unfinished folder of ``level``; a level folder that is not finished (yet not
        ``.partial``) is set aside first: "unreadable" if its summary parses, else
        "unfinished"."""
        final = self.level_path(level)
        if final.exists() or final.is_symlink():
            problem = folder_problem(final, self.layout)
            if problem is not None:
                looked_finished = (final / SUMMARY_FILE).exists()
                set_aside(final, "unreadable" if looked_finished else "unfinished", problem)
        return PartialFolder(final, self.layout)

    def partial_branch(self, level: int, name: str, digest: str) -> PartialFolder:
        return PartialFolder(self.branch_path(level, name, digest))

    def link_level(self, level: int, target: Path) -> None:
        """Make ``level_<level>`` a relative symbolic link to another store's level folder."""
        link = self.level_path(level)
        if not this_process_writes() or (
            link.is_symlink() and link.resolve() == target.resolve()
        ):
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

    def replicate(self, seed: int, layout: Layout | None = None) -> ReplicateStore:
        return ReplicateStore(self.path / f"replicate_{seed}", layout)

    def dense_replicate(self, seed: int, layout: Layout | None = None) -> ReplicateStore:
        return ReplicateStore(self.dense_path / f"replicate_{seed}", layout)

    def write_config(
        self, config_yaml: str, hashed: dict[str, Any], dense_hashed: dict[str, Any]
    ) -> None:
        """Record the config (once: the first run's stays, unless unreadable) and the hashed
        values, for the experiment and for its dense level 0."""
        for folder, values in ((self.path, hashed), (self.dense_path, dense_hashed)):
            if not _yaml_readable(folder / CONFIG_FILE):
                atomic_write_text(folder / CONFIG_FILE, config_yaml)
            atomic_write_json(folder / HASHED_FILE, values)

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
        return self.path / CURVE_FILE

    def write_curve(self) -> list[dict[str, Any]]:
        """Rebuild ``curve.csv`` from the level summaries; returns its rows."""
        rows = [{column: s.get(column) for column in CURVE_COLUMNS} for s in self.summaries()]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.curve_file, buffer.getvalue())
        return rows
