"""The experiment hash: which config values change results, and a digest of them.

As in OpenLTH, only values that differ from the schema's defaults enter the hash, so adding
a new option with a default later does not rename every existing result folder. Names,
seeds (replicates live inside the folder), paths, display and logging settings, the eval
batch size and the number of levels (more levels extend a run) are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lottery.config import Config
from lottery.data import PATH_IDENTIFIES_DATA

# Dotted keys that never change what training computes.
NOT_HASHED = frozenset(
    {
        "name",
        "seed",
        "results_root",
        "progress",
        "logger",
        "dataset.path",
        "pruning.levels",
        "train.eval_batch_size",
    }
)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def hashed_values(cfg: Config | DictConfig) -> dict[str, Any]:
    """The dotted config values that define the experiment (non-default, result-changing)."""
    values = _flat(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    defaults = _flat(dataclasses.asdict(Config()))
    keep = {}
    for key, value in sorted(values.items()):
        if key in NOT_HASHED and not (
            key == "dataset.path" and values.get("dataset.name") in PATH_IDENTIFIES_DATA
        ):
            continue
        if key.split(".")[0] in {k for k in NOT_HASHED if "." not in k}:
            continue
        if key in defaults and defaults[key] == value:
            continue
        keep[key] = value
    return keep


def experiment_hash(cfg: Config | DictConfig) -> str:
    """A 10-hex-digit digest naming the experiment's result folder."""
    payload = json.dumps(hashed_values(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:10]
