"""Results as pandas DataFrames: from the local store, or from W&B.

:func:`load_results` reads the ``summary.json`` of every finished level under the paths it is
given — results roots, experiment folders (``<root>/<name>/<hash>``), replicate or level
folders, ``summary.json`` files, or glob patterns of any of these (``results/*/3f*``,
``**`` allowed) — into one row per (experiment, hash, replicate, level):

=========================  ========  =========================================================
column                     dtype     meaning
=========================  ========  =========================================================
experiment                 str       ``name`` of the config (the results folder)
hash                       str       experiment hash (the folder under it)
replicate                  int       the seed
level                      int       pruning level (0 = dense)
branch                     str       what was trained at the level; ``"imp"`` (the only one now)
weights_remaining_pct      float     prunable weights alive, % of all prunable weights
test_accuracy              float     test accuracy at the end of training, in [0, 1]
early_stop_iteration       Int64     iteration of minimum validation loss (<NA>: no val set)
early_stop_test_accuracy   float     test accuracy there (NaN: no validation set)
params_remaining           int       parameters alive, biases and normalisation included
wall_seconds               float     wall-clock seconds of the level
path                       str       the level's folder (``.../replicate_<seed>/level_<L>``)
=========================  ========  =========================================================

Rows are sorted by experiment, hash, branch, replicate and level. :func:`load_metrics` reads
the ``metrics.jsonl`` beside each summary (one row per evaluation: ``iteration``,
``train/loss``, ``val/loss``, ``val/accuracy``, ``test/loss``, ``test/accuracy``) with the
identifying columns experiment, hash, replicate, level, branch and weights_remaining_pct.
:func:`aggregate` gives mean, std (sample, ddof=1; NaN for a single replicate), min and max
over replicates per (experiment, hash, branch, level), and ``count``, the replicates.
:func:`load_wandb` reads the same schema from W&B's public API (runs logged with
``logger=wandb``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lottery.store.files import METRICS_FILE, SUMMARY_FILE

DTYPES = {
    "experiment": "string",
    "hash": "string",
    "replicate": "int64",
    "level": "int64",
    "branch": "string",
    "weights_remaining_pct": "float64",
    "test_accuracy": "float64",
    "early_stop_iteration": "Int64",
    "early_stop_test_accuracy": "float64",
    "params_remaining": "Int64",
    "wall_seconds": "float64",
    "path": "string",
}
# The columns of load_results, in order, with their dtypes.
RESULT_COLUMNS = tuple(DTYPES)
KEYS = ("experiment", "hash", "replicate", "level", "branch")
SERIES = ("experiment", "hash", "branch")
GROUP = (*SERIES, "level")
# Columns aggregate() summarises over replicates.
METRICS = (
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
    "params_remaining",
    "wall_seconds",
)
# The columns of metrics.jsonl, in this order in load_metrics (others follow).
METRIC_COLUMNS = (
    "iteration",
    "train/loss",
    "val/loss",
    "val/accuracy",
    "test/loss",
    "test/accuracy",
)
DEFAULT_BRANCH = "imp"

_LEVEL_DIR = re.compile(r"level_\d+")
_BRANCH_DIR = re.compile(r"branch_[A-Za-z0-9_]+_[0-9a-f]+")
_REPLICATE_DIR = re.compile(r"replicate_\d+")
_GLOB_CHARS = re.compile(r"[*?\[]")


def summary_files(*paths: str | Path) -> list[Path]:
    """Every finished level's ``summary.json`` under ``paths`` (globs expanded), once each."""
    found: dict[Path, None] = {}
    for given in paths:
        text = os.path.expanduser(str(given))
        matches = sorted(glob.glob(text, recursive=True)) if _GLOB_CHARS.search(text) else [text]
        if not matches:
            raise FileNotFoundError(f"{given}: no such file or folder (nothing matches)")
        for match in matches:
            path = Path(match)
            if path.is_file():
                candidates = [path] if path.name == SUMMARY_FILE else []
            elif path.is_dir():
                # glob, not rglob: it follows the level_0 links into the dense folders.
                pattern = os.path.join(glob.escape(str(path)), "**", SUMMARY_FILE)
                candidates = sorted(Path(f) for f in glob.glob(pattern, recursive=True))
            else:
                raise FileNotFoundError(f"{match}: no such file or folder")
            for file in candidates:
                if _level_folder(file.parent) is not None:
                    found[file.absolute()] = None
    return list(found)


def _level_folder(folder: Path) -> Path | None:
    """The level folder of a finished level or branch folder of an experiment, else None.

    Not ``.partial`` or set-aside folders, not W&B's files, and not the ``dense_*`` folders,
    whose level 0 each experiment shows through its ``level_0`` link.
    """
    level = folder.parent if _BRANCH_DIR.fullmatch(folder.name) else folder
    replicate = level.parent
    if not (_LEVEL_DIR.fullmatch(level.name) and _REPLICATE_DIR.fullmatch(replicate.name)):
        return None
    return None if replicate.parent.name.startswith("dense_") else level


def _experiment_hash(folder: Path) -> str:
    """The hash of the experiment whose store holds ``folder`` (the folder it was found in)."""
    level = _level_folder(folder)
    assert level is not None
    return level.parent.parent.name


def _row(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {
        "experiment": summary["experiment"],
        "hash": _experiment_hash(folder),
        "replicate": summary["replicate"],
        "level": summary["level"],
        "branch": summary.get("branch", DEFAULT_BRANCH),
        "weights_remaining_pct": summary["weights_remaining_pct"],
        "test_accuracy": summary["test_accuracy"],
        "early_stop_iteration": summary.get("early_stop_iteration"),
        "early_stop_test_accuracy": summary.get("early_stop_test_accuracy"),
        "params_remaining": summary.get("params_remaining"),
        "wall_seconds": (summary.get("timing") or {}).get("wall"),
        "path": str(folder),
    }


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows in the documented schema: columns in order, typed, sorted."""
    df = pd.DataFrame(list(rows), columns=list(RESULT_COLUMNS))
    df = df.astype(DTYPES)
    order = ["experiment", "hash", "branch", "replicate", "level"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def load_results(*paths: str | Path) -> pd.DataFrame:
    """One row per finished level under ``paths``, in the schema of the module docstring.

    With no path, reads ``results/`` (the default ``results_root``). A path that does not
    exist, or a glob that matches nothing, raises :class:`FileNotFoundError`; a folder with
    no finished level gives an empty frame with the same columns.
    """
    rows = []
    for file in summary_files(*(paths or ("results",))):
        summary = _read_summary(file)
        if summary is not None:
            rows.append(_row(summary, file.parent))
    return _frame(rows)


def _skip(file: Path, what: str, error: Exception) -> None:
    reason = " ".join(str(error).split())[:120] or type(error).__name__
    print(f"warning: skipped {what} of {file} ({reason})", file=sys.stderr, flush=True)


def _read_summary(file: Path) -> dict[str, Any] | None:
    """A summary, or None with a warning line naming the file if it cannot be read."""
    try:
        summary = json.loads(file.read_text())
        _row(summary, file.parent)
    except (OSError, ValueError, KeyError, TypeError) as error:
        _skip(file, "the unreadable summary", error)
        return None
    return summary


def _line_numbers(numbers: list[int]) -> str:
    """``line 6`` or ``lines 2-4, 9``: the lines skipped in one file."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"line {text}" if len(numbers) == 1 else f"lines {text}"


def _record(line: bytes) -> dict[str, Any]:
    """One evaluation record of ``metrics.jsonl``; ``ValueError`` if it is not one (a line
    cut by a kill, garbled bytes, not UTF-8)."""
    record = json.loads(line.decode("utf-8"))
    iteration = record.get("iteration") if isinstance(record, dict) else None
    if not isinstance(iteration, int) or isinstance(iteration, bool):
        raise ValueError("not an evaluation record")
    return record


def _read_records(file: Path) -> list[dict[str, Any]]:
    """The evaluations of a ``metrics.jsonl``; the lines that are not (a line cut by a kill,
    garbled bytes) are skipped, with one warning line for the file."""
    try:
        lines = file.read_bytes().splitlines()
    except OSError as error:
        _skip(file, "the unreadable metrics", error)
        return []
    records, skipped, first_error = [], [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(_record(line))
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            skipped.append(number)
            first_error = first_error or error
    if first_error is not None:
        _skip(file, _line_numbers(skipped), first_error)
    return records


def load_metrics(*paths: str | Path) -> pd.DataFrame:
    """One row per evaluation of every finished level under ``paths`` (see the docstring).

    Columns: experiment, hash, replicate, level, branch, weights_remaining_pct, then the
    metrics as logged (``iteration``, ``train/loss``, ``val/loss``, ``val/accuracy``,
    ``test/loss``, ``test/accuracy``). ``train/loss`` is NaN at iteration 0 of a level
    (no training step yet) and the ``val/`` columns are NaN without a validation set.
    """
    frames = []
    for file in summary_files(*(paths or ("results",))):
        summary = _read_summary(file)
        records = _read_records(file.parent / METRICS_FILE) if summary else []
        if not records:
            continue
        frame = pd.DataFrame.from_records(records)
        ident = {k: _row(summary, file.parent)[k] for k in (*KEYS, "weights_remaining_pct")}
        for position, (key, value) in enumerate(ident.items()):
            frame.insert(position, key, value)
        frames.append(frame)
    identity = [*KEYS, "weights_remaining_pct"]
    if not frames:
        return pd.DataFrame(columns=[*identity, "iteration"])
    df = pd.concat(frames, ignore_index=True)
    known = [c for c in METRIC_COLUMNS if c in df.columns]
    df = df[[*identity, *known, *(c for c in df.columns if c not in (*identity, *known))]]
    df = df.astype({k: DTYPES[k] for k in identity} | {"iteration": "int64"})
    order = ["experiment", "hash", "branch", "replicate", "level", "iteration"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def aggregate(df: pd.DataFrame, metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """Mean, std, min and max over replicates per (experiment, hash, branch, level).

    Columns: experiment, hash, branch, level, ``weights_remaining_pct`` (the mean; the same
    for every replicate of a hash), ``count`` (replicates), then ``<metric>_mean``,
    ``<metric>_std``, ``<metric>_min``, ``<metric>_max`` for each metric present. Std is the
    sample standard deviation (NaN with one replicate). Sorted like the input.
    """
    group = list(GROUP)
    metrics = [m for m in metrics if m in df.columns]
    if df.empty:
        columns = [*group, "weights_remaining_pct", "count"]
        columns += [f"{m}_{s}" for m in metrics for s in ("mean", "std", "min", "max")]
        return pd.DataFrame(columns=columns)
    values = df[[*group, "replicate", "weights_remaining_pct", *metrics]].copy()
    for m in metrics:
        values[m] = values[m].astype("float64")
    grouped = values.groupby(group, sort=True, dropna=False)
    out = grouped["weights_remaining_pct"].mean().to_frame()
    out["count"] = grouped["replicate"].nunique()
    for m in metrics:
        stats = grouped[m].agg(["mean", "std", "min", "max"])
        for stat in stats.columns:
            out[f"{m}_{stat}"] = stats[stat]
    return out.reset_index()


def load_wandb(project: str, entity: str | None = None, api: Any = None) -> pd.DataFrame:
    """The :func:`load_results` schema from W&B's public API (runs of ``logger=wandb``).

    Each run is one finished level (or branch) of one replicate: its config has ``name``,
    ``hash``, ``seed``, ``level``, ``branch`` and ``weights_remaining_pct``, its summary the
    level's results (``test_accuracy``, ``early_stop_iteration``,
    ``early_stop_test_accuracy``, ``params_remaining``, ``wall_seconds``); a run without
    ``test_accuracy`` (cut off) is skipped. Runs of the earlier layout, one per replicate
    (no ``level`` in the config) with one history row per finished level (``level``,
    ``prune/weights_remaining``, ``curve/…``), are read too. ``path`` is the run's URL; a level
    found twice keeps the last. ``api`` defaults to ``wandb.Api()`` (needs network and
    credentials); any object with the same ``runs(path)`` method will do.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    rows = []
    for run in api.runs(f"{entity}/{project}" if entity else project):
        rows.extend(_wandb_rows(run))
    # A level can be found twice (a resumed run of the earlier layout); keep the last.
    frame = _frame(rows)
    return frame.drop_duplicates(list(KEYS), keep="last").reset_index(drop=True)


def _wandb_rows(run: Any) -> list[dict[str, Any]]:
    """The :func:`load_wandb` rows of one W&B run: none (not a lottery run, or cut off),
    its level's, or (the earlier layout) one per finished level of its history."""
    config = dict(run.config)
    if "hash" not in config:
        return []  # not a lottery run
    identity = {
        "experiment": config.get("name"),
        "hash": config["hash"],
        "replicate": config.get("seed"),
        "branch": config.get("branch", DEFAULT_BRANCH),
        "path": getattr(run, "url", None),
    }
    if "level" in config:  # one run per level
        summary = getattr(run, "summary", None) or {}
        if summary.get("test_accuracy") is None:
            return []
        pct = config.get("weights_remaining_pct", summary.get("weights_remaining_pct"))
        return [
            {
                **identity,
                "level": config["level"],
                "weights_remaining_pct": pct,
                "test_accuracy": summary["test_accuracy"],
                "early_stop_iteration": summary.get("early_stop_iteration"),
                "early_stop_test_accuracy": summary.get("early_stop_test_accuracy"),
                "params_remaining": summary.get("params_remaining"),
                "wall_seconds": summary.get("wall_seconds"),
            }
        ]
    return [  # the earlier layout: one run per replicate, a history row per level
        {
            **identity,
            "level": record["level"],
            "weights_remaining_pct": record["prune/weights_remaining"],
            "test_accuracy": record["curve/test_accuracy"],
            "early_stop_iteration": record.get("curve/early_stop_iteration"),
            "early_stop_test_accuracy": record.get("curve/early_stop_test_accuracy"),
            "params_remaining": record.get("prune/params_remaining"),
            "wall_seconds": record.get("curve/wall_seconds"),
        }
        for record in run.scan_history()
        if record.get("curve/test_accuracy") is not None
    ]


def load_deployment(*paths: str | Path) -> list[dict[str, Any]]:
    """Every level's ``deployment.json`` under ``paths`` (see
    :mod:`lottery.experiment.deployment`), with its experiment, hash and replicate, in
    path order."""
    rows = []
    for file in summary_files(*paths):
        figures = file.parent / "deployment.json"
        if not figures.is_file():
            continue
        try:
            row = json.loads(figures.read_text())
        except (OSError, ValueError) as error:
            _skip(figures, "deployment figures", error)
            continue
        replicate = file.parent.parent
        row.update(
            experiment=replicate.parent.parent.name,
            hash=replicate.parent.name,
            replicate=replicate.name.removeprefix("replicate_"),
        )
        rows.append(row)
    return rows
