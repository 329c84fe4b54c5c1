"""A lock on a replicate folder, so that two runs never both write one.

``fcntl.flock`` on a ``.lock`` file: the kernel drops it when its process ends, however it
ends (SIGKILL included), so a killed run never leaves a stale lock behind. A second run of
the same experiment waits, saying once who holds the lock, then finds the first run's
levels finished and goes on from there. Something else where the ``.lock`` file belongs (a
folder, a FIFO, a broken link) is moved aside, with a warning, and a new lock file made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lottery.store.results import warn


def _move_aside_unless_file(path: Path) -> None:
    """Rename whatever is at ``path`` if it is not a regular file (or a link to one)."""
    if path.is_file() or not (path.exists() or path.is_symlink()):
        return
    n = 1
    while (aside := path.with_name(f"{path.name}.not-a-file-{n}")).exists():
        n += 1
    try:
        path.rename(aside)
    except FileNotFoundError:  # another run moved it first
        return
    warn(f"{path} was not a lock file; moved it to {aside.name}")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    _move_aside_unless_file(path)
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
