"""``init.checkpoint``: start from a trained model instead of the initialiser.

Reads the weights (and BatchNorm statistics) from any of:

- a finished level or branch folder of a results store (its ``params.npz``);
- an Orbax checkpoint: one of ours (``<level>.partial/checkpoints/<step>``) or any PyTree
  checkpoint holding ``params`` (and ``batch_stats``);
- a ``.npz`` or ``.safetensors`` file keyed by parameter path (``fc1/kernel``, optionally
  ``params/fc1/kernel``; statistics as ``batch_stats/bn1/mean``).

Every array is checked against the model before anything trains: a missing, extra or
differently shaped parameter is one :class:`ConfigError` line naming the path and both shapes,
and so is an array that is not real numbers (strings, complex values) or holds a NaN or an
infinity (a diverged model would otherwise be trained from, or kept as level 0). Only regular
files and folders are opened: a FIFO or a device would block the read.
The experiment is hashed by the weights' content, not by the file's path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from lottery.config import ConfigError
from lottery.pruning import flatten, unflatten
from lottery.store.files import PARAMS_FILE

KINDS = (
    "a level folder of a results store, an Orbax checkpoint folder, or a .npz or "
    ".safetensors file keyed by parameter path"
)


def load_pretrained(path: str, params: Any, batch_stats: Any) -> tuple[Any, Any, str]:
    """The weights at ``path``, shaped and typed like the model's ``params`` and
    ``batch_stats``, and a digest of their content."""
    source = Path(path).expanduser()
    if not source.exists():
        raise ConfigError(f"init.checkpoint={path!r} does not exist; give {KINDS}")
    if not (source.is_dir() or source.is_file()):  # opening a FIFO would wait for a writer
        raise ConfigError(
            f"init.checkpoint={path!r} is not a regular file or folder (a FIFO, socket or "
            f"device); give {KINDS}"
        )
    try:
        found = _read(source)
    except ConfigError:
        raise
    except Exception as error:  # an unreadable or foreign file
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ConfigError(
            f"init.checkpoint={path!r} cannot be read ({reason}); give {KINDS}"
        ) from None
    loaded_params = _matched(path, "params", found.get("params", {}), params)
    loaded_stats = _matched(path, "batch_stats", found.get("batch_stats", {}), batch_stats)
    return loaded_params, loaded_stats, weights_digest(loaded_params, loaded_stats)


def weights_digest(params: Any, batch_stats: Any) -> str:
    """A short hash of the weights' paths, shapes, types and values."""
    sha = hashlib.sha256()
    for prefix, tree in (("params", params), ("batch_stats", batch_stats)):
        for key, value in flatten(tree).items():
            array = np.ascontiguousarray(value)
            sha.update(f"{prefix}/{key}:{array.dtype}:{array.shape}".encode())
            sha.update(array.tobytes())
    return sha.hexdigest()[:16]


def _read(source: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{"params": {path: array}, "batch_stats": {path: array}}`` from any known kind."""
    if source.is_dir():
        if (source / PARAMS_FILE).is_file():  # a level or branch folder of ours
            return _grouped(dict(np.load(source / PARAMS_FILE)))
        return _from_orbax(source)
    if source.suffix == ".npz":
        with np.load(source) as data:
            return _grouped({key: data[key] for key in data.files})
    if source.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return _grouped(load_file(str(source)))
    raise ConfigError(f"init.checkpoint={str(source)!r} is not a kind known here; give {KINDS}")


def _grouped(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Flat keys split into params and BatchNorm statistics (no prefix: params)."""
    grouped: dict[str, dict[str, np.ndarray]] = {"params": {}, "batch_stats": {}}
    for key, value in flat.items():
        prefix, _, rest = key.partition("/")
        if prefix in grouped and rest:
            grouped[prefix][rest] = np.asarray(value)
        else:
            grouped["params"][key] = np.asarray(value)
    return grouped


def _from_orbax(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """The params (and statistics) of an Orbax checkpoint: the first ``params`` subtree
    found, depth first (ours keep them under ``state/train``)."""
    import orbax.checkpoint as ocp

    item = folder / "state" if (folder / "state").is_dir() else folder
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.restore(item.absolute())
    holder = _holder_of_params(tree)
    if holder is None:
        raise ConfigError(f"init.checkpoint={str(folder)!r} holds no 'params'; give {KINDS}")
    return {
        "params": {k: np.asarray(v) for k, v in flatten(holder["params"]).items()},
        "batch_stats": {
            k: np.asarray(v) for k, v in flatten(holder.get("batch_stats") or {}).items()
        },
    }


def _holder_of_params(tree: Any) -> dict[str, Any] | None:
    if not isinstance(tree, dict):
        return None
    if isinstance(tree.get("params"), dict):
        return tree
    for value in tree.values():
        found = _holder_of_params(value)
        if found is not None:
            return found
    return None


def _matched(path: str, kind: str, found: dict[str, np.ndarray], model: Any) -> Any:
    """``found`` as a tree like ``model``'s; one line naming the first mismatch."""
    expected = flatten(model)
    for key, value in expected.items():
        if key not in found:
            raise ConfigError(
                f"init.checkpoint={path!r} has no {kind} {key!r} (shape {tuple(np.shape(value))})"
                "; it was saved from another model: choose the model it was trained with"
            )
        if tuple(np.shape(found[key])) != tuple(np.shape(value)):
            raise ConfigError(
                f"init.checkpoint={path!r}: {kind} {key!r} has shape "
                f"{tuple(np.shape(found[key]))} where the model has {tuple(np.shape(value))}; "
                "choose the model (and widths) it was trained with"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ConfigError(
            f"init.checkpoint={path!r} has {kind} {extra[0]!r} that the model does not have; "
            "choose the model it was trained with"
        )
    for key in expected:
        _check_values(path, kind, key, found[key])
    return unflatten(
        {key: np.asarray(found[key], np.asarray(value).dtype) for key, value in expected.items()}
    )


def _check_values(path: str, kind: str, key: str, array: np.ndarray) -> None:
    """One line for an array that is not real numbers, or holds a NaN or an infinity
    (casting would drop an imaginary part silently, or fail on strings)."""
    dtype = np.asarray(array).dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise ConfigError(
            f"init.checkpoint={path!r}: {kind} {key!r} holds complex values ({dtype}); "
            "weights are real numbers: save the real weights (e.g. np.real) and give that file"
        )
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise ConfigError(
            f"init.checkpoint={path!r}: {kind} {key!r} holds {dtype} values, not numbers; "
            f"give {KINDS}"
        )
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ConfigError(
            f"init.checkpoint={path!r}: {kind} {key!r} has {bad:,} non-finite values (NaN or "
            f"inf) of {np.size(array):,}; give the weights of a model that did not diverge"
        )
