"""Content-addressed result folders with atomic writes. Computes nothing."""

from lottery.store.hashing import NOT_HASHED, experiment_hash, hashed_values
from lottery.store.results import (
    CURVE_COLUMNS,
    ExperimentStore,
    LevelWriter,
    ReplicateStore,
    load_tree_npz,
    save_tree_npz,
)

__all__ = [
    "CURVE_COLUMNS",
    "NOT_HASHED",
    "ExperimentStore",
    "LevelWriter",
    "ReplicateStore",
    "experiment_hash",
    "hashed_values",
    "load_tree_npz",
    "save_tree_npz",
]
