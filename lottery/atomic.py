"""Atomic file writes: a temp file in the same directory, fsync, then ``os.replace``.

A reader (or a job killed mid-write) sees either the old file or the whole new one, never a
partial one. Used by every layer that writes, so it depends on nothing in the package.

One experiment over several processes has one writer (process 0, :mod:`lottery.distributed`):
in the others :func:`this_process_writes` is False, these writes do nothing, and the store's
few other writes (folders made, renamed, linked, set aside; the lock) ask it too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


_WRITES = [True]  # whether this process writes files (one of several: process 0 alone)


def this_process_writes() -> bool:
    """Whether this process writes the results (False in processes other than the first of
    one experiment run over several)."""
    return _WRITES[0]


def set_this_process_writes(writes: bool) -> None:
    """Say whether this process writes the results (see :func:`this_process_writes`)."""
    _WRITES[0] = writes


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[io.BufferedWriter]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    if not this_process_writes():
        return
    with _replacing(Path(path)) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays as an uncompressed ``.npz``, atomically."""
    if not this_process_writes():
        return
    with _replacing(Path(path)) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
