"""A lock on a replicate folder, so that two runs never both write one.

``fcntl.flock`` on a ``.lock`` file: the kernel drops it when its process ends, however it
ends (SIGKILL included), so a killed run never leaves a stale lock behind. A second run of
the same experiment waits, saying once who holds the lock, then finds the first run's
levels finished and goes on from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lottery.store.results import warn


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            warn(f"{folder} is being written by {holder}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
