"""Content-addressed result folders with atomic writes. Computes nothing.

The names are loaded on first use (PEP 562), so that ``lottery.store.files`` (the store's
file names) can be imported by light readers such as :mod:`lottery.analysis` without
pulling in JAX, which :mod:`lottery.store.results` needs for the masks' pytrees.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lottery.store.files import (
    CONFIG_FILE,
    CURVE_FILE,
    HASHED_FILE,
    MASK_FILE,
    METRICS_FILE,
    PARAMS_FILE,
    SPARSE_PARAMS_FILE,
    SUMMARY_FILE,
)

if TYPE_CHECKING:
    from lottery.store.hashing import (
        NOT_HASHED,
        dense_hash,
        dense_values,
        digest,
        experiment_hash,
        hashed_values,
    )
    from lottery.store.lock import locked
    from lottery.store.results import (
        CURVE_COLUMNS,
        MAIN_BRANCH,
        ExperimentStore,
        Layout,
        PartialFolder,
        ReplicateStore,
        folder_done,
        folder_problem,
        load_tree_npz,
        npz_readable,
        read_summary,
        remove_stale_temp_files,
        save_tree_npz,
        set_aside,
        warn,
    )

# Which module of the store each name comes from.
_MODULE_OF = {
    **dict.fromkeys(
        ("NOT_HASHED", "dense_hash", "dense_values", "digest", "experiment_hash", "hashed_values"),
        "hashing",
    ),
    "locked": "lock",
    **dict.fromkeys(
        (
            "CURVE_COLUMNS",
            "MAIN_BRANCH",
            "ExperimentStore",
            "Layout",
            "PartialFolder",
            "ReplicateStore",
            "folder_done",
            "folder_problem",
            "load_tree_npz",
            "npz_readable",
            "read_summary",
            "remove_stale_temp_files",
            "save_tree_npz",
            "set_aside",
            "warn",
        ),
        "results",
    ),
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'lottery.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lottery.store.{module}"), name)


__all__ = [
    "CONFIG_FILE",
    "CURVE_COLUMNS",
    "CURVE_FILE",
    "HASHED_FILE",
    "MAIN_BRANCH",
    "MASK_FILE",
    "METRICS_FILE",
    "NOT_HASHED",
    "PARAMS_FILE",
    "SPARSE_PARAMS_FILE",
    "SUMMARY_FILE",
    "ExperimentStore",
    "Layout",
    "PartialFolder",
    "ReplicateStore",
    "dense_hash",
    "dense_values",
    "digest",
    "experiment_hash",
    "folder_done",
    "folder_problem",
    "hashed_values",
    "load_tree_npz",
    "locked",
    "npz_readable",
    "read_summary",
    "remove_stale_temp_files",
    "save_tree_npz",
    "set_aside",
    "warn",
]
