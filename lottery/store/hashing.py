"""The experiment hash: which config values change results, and a digest of them.

As in OpenLTH, only values that differ from the schema's defaults enter the hash, so adding
a new option with a default later does not rename every existing result folder. Names,
seeds (replicates live inside the folder), paths, display, logging and checkpoint settings,
the eval batch size, the training kernels (equal to float rounding) and the number of
levels (more levels extend a run) are left out. The data itself enters as a fingerprint of
what was read (``data.fingerprint``), so two directories of different files never share a
folder.

Level 0 (the dense training and its rewind points) has a hash of its own, of the same values
less those that only change levels >= 1: every ``pruning.*`` key and
``train.replay_data_order``. A sweep over pruning settings trains the dense network once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lottery.config import Config

# Dotted keys (or top-level groups) that never change what training computes.
NOT_HASHED = frozenset(
    {
        "name",
        "seed",
        "results_root",
        "progress",
        "logger",
        "deploy",
        "branches",
        "branch",
        "dataset.path",
        "pruning.levels",
        "pruning.max_accuracy_drop",
        "train.eval_batch_size",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.data_parallel",
        "train.replicas",
        "model.kernels",
    }
)

# Keys that change levels >= 1 only, left out of level 0's hash.
ONLY_PRUNED_LEVELS = ("pruning.", "train.replay_data_order")


def method_revision(cfg: Config | DictConfig) -> str | None:
    """The revision of the config's pruning method (``Strategy.revision``: a method corrected
    after stores held its results), if it has one; None for a method this cannot find (its
    own one-line error comes from the plan)."""
    from lottery.config import ConfigError
    from lottery.pruning.strategies import find_strategy

    try:
        strategy = find_strategy(cfg.pruning.method)
    except ConfigError:
        return None
    return None if strategy.revision is None else strategy.revision(cfg.pruning)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def hashed_values(cfg: Config | DictConfig, data_fingerprint: str | None = None) -> dict[str, Any]:
    """The dotted config values that define the experiment (non-default, result-changing),
    with ``data.fingerprint`` when the data's fingerprint is given."""
    values = _flat(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    if values.get("data_seed") == values.get("seed"):
        values["data_seed"] = None  # the same as leaving it unset
    defaults = _flat(dataclasses.asdict(Config()))
    groups = {k for k in NOT_HASHED if "." not in k}
    keep = {}
    for key, value in sorted(values.items()):
        if key in NOT_HASHED or key.split(".")[0] in groups:
            continue
        if key in defaults and defaults[key] == value:
            continue
        keep[key] = value
    revision = method_revision(cfg)
    if revision is not None:
        keep["pruning.revision"] = revision
    if data_fingerprint is not None:
        keep["data.fingerprint"] = data_fingerprint
    return keep


def dense_values(hashed: dict[str, Any]) -> dict[str, Any]:
    """The values of :func:`hashed_values` that change level 0."""
    return {k: v for k, v in hashed.items() if not k.startswith(ONLY_PRUNED_LEVELS)}


def digest(values: dict[str, Any]) -> str:
    """A 10-hex-digit digest of hashed values."""
    payload = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def experiment_hash(cfg: Config | DictConfig, data_fingerprint: str | None = None) -> str:
    """The digest naming the experiment's result folder."""
    return digest(hashed_values(cfg, data_fingerprint))


def dense_hash(cfg: Config | DictConfig, data_fingerprint: str | None = None) -> str:
    """The digest naming the folder of the experiment's level 0 (``dense_<digest>``)."""
    return digest(dense_values(hashed_values(cfg, data_fingerprint)))
