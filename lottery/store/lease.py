"""A lock for filesystems where ``flock`` does not exclude: a lease file.

``fcntl.flock`` fails on Lustre mounted without ``flock`` (ENOSYS) and excludes nothing
across hosts on NFS mounted with ``nolock`` (filelock#67, #6). There the lock is a file made
with ``O_CREAT | O_EXCL`` (atomic on NFSv3+ and Lustre), holding its holder's host and pid,
whose modification time the holder renews every :data:`RENEW_SECONDS` while it holds it.
A lease is stale, and is broken by the next run, when its holder is gone: on the same host
its pid no longer runs; on another host it has not been renewed for :data:`LEASE_SECONDS`.
(filelock's ``SoftFileLock`` is the same file without the renewal, so it cannot tell a
crashed holder from a slow one: a killed run would lock its folder for good.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LEASE_SECONDS = 60.0  # a holder on another host not heard of for this long is gone
RENEW_SECONDS = 10.0
POLL_SECONDS = 0.5


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(path: Path, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Whether the lease at ``path`` belongs to a holder that is gone."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: try again to take it
    words = _read(path).split()
    well_formed = len(words) == 4 and words[0] == "pid" and words[2] == "on"
    if well_formed and words[1].isdigit() and words[3] == socket.gethostname():
        return not _pid_runs(int(words[1]))
    # Another host's (or an unreadable, half-written) lease: gone once no longer renewed.
    return age > lease_seconds


def _try_take(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(_holder() + "\n")
    return True


def _break(path: Path, seen: str) -> None:
    """Remove the stale lease ``seen`` (unless another run replaced it meanwhile)."""
    if _read(path) == seen:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def lease(
    path: Path,
    on_wait: Callable[[str], None],
    lease_seconds: float = LEASE_SECONDS,
    renew_seconds: float = RENEW_SECONDS,
) -> Iterator[None]:
    """Hold the lease file ``path`` for the ``with`` block; ``on_wait(holder)`` is called
    once if another run holds it (then this one waits for it to go)."""
    warned = False
    while not _try_take(path):
        holder = _read(path)
        if is_stale(path, lease_seconds):
            _break(path, holder)
            continue
        if not warned:
            on_wait(holder or "another process")
            warned = True
        time.sleep(POLL_SECONDS)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(renew_seconds):
            with contextlib.suppress(OSError):
                os.utime(path)

    renewer = threading.Thread(target=renew, name="lottery-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if _read(path) == _holder():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
