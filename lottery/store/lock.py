"""A lock on a replicate folder, so that two runs never both write one.

``fcntl.flock`` on a ``.lock`` file: the kernel drops it when its process ends, however it
ends (SIGKILL included), so a killed run never leaves a stale lock behind. A second run of
the same experiment waits, saying once who holds the lock, then finds the first run's
levels finished and goes on from there. Something else where the ``.lock`` file belongs (a
folder, a FIFO, a broken link) is moved aside, with a warning, and a new lock file made.

Where ``flock`` is not available (Lustre without ``flock``: ENOSYS, and the like) the lock is
a lease file instead (:mod:`lottery.store.lease`); where it is available but excludes nothing
across hosts (NFS mounted ``nolock``), ``LOTTERY_LOCK=lease`` chooses the lease for every run
(``LOTTERY_LOCK=flock``: flock or one error line; unset or ``auto``: flock, else the lease).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lottery.atomic import this_process_writes
from lottery.config import ConfigError
from lottery.store.lease import lease
from lottery.store.results import warn

BACKENDS = ("auto", "flock", "lease")
LEASE_FILE = ".lease"
# What flock raises where the filesystem cannot lock (Lustre without flock, some FUSE mounts).
NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


def backend() -> str:
    """``LOTTERY_LOCK``, checked (one ConfigError line)."""
    chosen = os.environ.get("LOTTERY_LOCK", "auto") or "auto"
    if chosen not in BACKENDS:
        raise ConfigError(
            f"LOTTERY_LOCK={chosen!r} is not a lock; choose one of {', '.join(BACKENDS)} "
            "(lease on filesystems where flock does not exclude, e.g. NFS with nolock)"
        )
    return chosen


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
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block; nothing in a
    process that does not write (one experiment over several processes: process 0 holds
    it for all of them)."""
    if not this_process_writes():
        yield
        return
    chosen = backend()
    folder.mkdir(parents=True, exist_ok=True)
    if chosen != "lease":
        path = folder / ".lock"
        _move_aside_unless_file(path)
        with open(path, "a+", encoding="utf-8") as handle:
            if _flock(handle, folder, required=chosen == "flock"):
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                return
    waiting = f"{folder} is being written by {{}}; waiting for it to finish"
    with lease(folder / LEASE_FILE, lambda holder: warn(waiting.format(holder))):
        yield


def _flock(handle: object, folder: Path, required: bool) -> bool:
    """Take ``flock`` on ``handle``, waiting (saying once who holds it); False where this
    filesystem cannot flock (unless ``required``: then one ConfigError line)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        warn(f"{folder} is being written by {holder}; waiting for it to finish")
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as error:
        if error.errno not in NO_FLOCK:
            raise
        if required:
            raise ConfigError(
                f"LOTTERY_LOCK=flock, but {folder}'s filesystem cannot flock ({error.strerror});"
                " use LOTTERY_LOCK=lease (or auto)"
            ) from None
        return False
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return True
