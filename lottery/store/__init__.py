"""Content-addressed result folders with atomic writes. Computes nothing."""

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

__all__ = [
    "CURVE_COLUMNS",
    "MAIN_BRANCH",
    "NOT_HASHED",
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
