"""Readable names for the series of a figure: the experiment's name and the overrides that
tell its hashes apart, read from each hash folder's ``hashed.json`` (and ``config.yaml`` for
a value one hash left at its default). The hashes themselves go into a footnote.

No pandas and no matplotlib here: the training command names its one plot's series too.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lottery.store.files import CONFIG_FILE, HASHED_FILE

# A key of hashed.json that is no setting a reader chose (the data set's name says it).
NOT_A_SETTING = ("data.fingerprint",)
FOOTNOTE_WIDTH = 110


def experiment_folder(level_path: str | Path, digest: str) -> Path | None:
    """The ``<root>/<name>/<hash>`` folder above a level (or branch) folder, if any."""
    for folder in Path(str(level_path)).parents:
        if folder.name == digest:
            return folder
    return None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def settings_of(folder: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the hashed values, the whole resolved config flattened) of a hash folder; empty
    dicts where a file is missing or unreadable (a figure is still drawn, named by hash)."""
    if folder is None:
        return {}, {}
    try:
        hashed = json.loads((folder / HASHED_FILE).read_text())
    except (OSError, ValueError):
        hashed = {}
    try:
        import yaml

        resolved = _flatten(yaml.safe_load((folder / CONFIG_FILE).read_text()) or {})
    except (OSError, ValueError, ImportError, AttributeError):
        resolved = {}
    hashed = {k: v for k, v in hashed.items() if k not in NOT_A_SETTING}
    return hashed, resolved


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def differing_settings(
    settings: Mapping[str, tuple[dict[str, Any], dict[str, Any]]],
) -> dict[str, dict[str, str]]:
    """For each hash, ``key -> value`` of the settings whose values are not the same in all
    of ``settings`` (hash -> :func:`settings_of`); a key one hash does not list takes its value
    from that hash's resolved config."""
    keys = sorted({key for hashed, _ in settings.values() for key in hashed})
    values = {
        digest: {k: _text(hashed.get(k, resolved.get(k, "default"))) for k in keys}
        for digest, (hashed, resolved) in settings.items()
    }
    differing = [k for k in keys if len({v[k] for v in values.values()}) > 1]
    return {digest: {k: v[k] for k in differing} for digest, v in values.items()}


SeriesKey = tuple[str, str, str]  # (experiment, hash, branch)


def series_names(
    keys: Iterable[SeriesKey], folders: Mapping[tuple[str, str], Path | None]
) -> tuple[dict[SeriesKey, str], str]:
    """(a label per series, the footnote naming the hashes).

    A label is the experiment's name, then the overrides that differ between the hashes of
    that name (``pruning.fraction=0.5``), then the branch when the figure has several. Where
    two labels would still be equal (nothing readable tells them apart) the hash is added.
    ``folders`` maps (experiment, hash) to its folder (:func:`experiment_folder`).
    """
    keys = list(keys)
    by_experiment: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {}
    for experiment, digest, _ in keys:
        settings = settings_of(folders.get((experiment, digest)))
        by_experiment.setdefault(experiment, {})[digest] = settings
    runs: dict[tuple[str, str], str] = {}
    for experiment, settings in by_experiment.items():
        for digest, differing in differing_settings(settings).items():
            words = [experiment, *(f"{k}={v}" for k, v in differing.items())]
            runs[(experiment, digest)] = " ".join(w for w in words if w)
    if len(set(runs.values())) < len(runs):
        runs = {(e, d): f"{label} [{d}]" for (e, d), label in runs.items()}
    several_branches = len({branch for *_, branch in keys}) > 1
    labels = {
        (e, d, b): f"{runs[(e, d)]} {b}".strip() if several_branches else runs[(e, d)] or b
        for e, d, b in keys
    }
    return labels, hash_footnote(runs, by_experiment)


def _by_label(item: tuple[tuple[str, str], str]) -> str:
    return item[1]


def hash_footnote(
    runs: Mapping[tuple[str, str], str],
    by_experiment: Mapping[str, Mapping[str, tuple[dict[str, Any], dict[str, Any]]]],
) -> str:
    """``hash 46ccbaea91: mnist1d_imp, dataset.name=digits, …`` for one hash (its settings
    are the caption), else ``hashes: <label> = <hash>; …``."""
    if len(runs) == 1:
        [((experiment, digest), label)] = runs.items()
        hashed, _ = by_experiment[experiment][digest]
        words = [label, *(f"{k}={_text(v)}" for k, v in sorted(hashed.items()))]
        text = f"hash {digest}: " + ", ".join(w for w in words if w)
    else:
        named = sorted(runs.items(), key=_by_label)
        text = "hashes: " + "; ".join(f"{label} = {digest}" for (_, digest), label in named)
    return textwrap.fill(text, FOOTNOTE_WIDTH)
