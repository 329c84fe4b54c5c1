"""The store's lock where flock does not exclude (Lustre without flock, NFS with nolock): a
lease file (lottery.store.lease), chosen by LOTTERY_LOCK=lease or where flock fails."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lottery.config import ConfigError
from lottery.store import lock
from lottery.store.lease import is_stale, lease

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lottery.store.lock import locked
    with locked(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def hold_in_child(folder: Path, seconds: float) -> subprocess.Popen:
    """A process holding ``folder``'s lock (LOTTERY_LOCK as set) for ``seconds``."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_lease_excludes_a_second_run_until_the_first_is_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOTTERY_LOCK", "lease")
    child = hold_in_child(tmp_path, 2.0)
    begin = time.monotonic()
    with lock.locked(tmp_path):
        waited = time.monotonic() - begin
        assert (tmp_path / ".lease").read_text().strip() == (
            f"pid {os.getpid()} on {socket.gethostname()}"
        )
    assert child.wait() == 0
    assert waited > 1.0, waited  # it waited for the holder
    err = capsys.readouterr().err
    assert err.count("is being written by pid") == 1, err
    assert not (tmp_path / ".lease").exists()  # released
    assert not (tmp_path / ".lock").exists()  # flock's file not used


def test_a_killed_holders_lease_is_broken_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_LOCK", "lease")
    child = hold_in_child(tmp_path, 60.0)
    child.kill()
    child.wait()
    assert (tmp_path / ".lease").exists()  # left behind by SIGKILL
    begin = time.monotonic()
    with lock.locked(tmp_path):
        assert time.monotonic() - begin < 1.0


def test_another_hosts_lease_holds_until_no_longer_renewed(tmp_path):
    path = tmp_path / ".lease"
    path.write_text("pid 1 on some-other-node\n")
    assert not is_stale(path, lease_seconds=30)
    old = time.time() - 31
    os.utime(path, (old, old))
    assert is_stale(path, lease_seconds=30)
    path.write_text("garbled")  # a half-written lease, just renewed: not stale yet
    assert not is_stale(path, lease_seconds=30)


def test_the_holder_renews_its_lease(tmp_path):
    path = tmp_path / ".lease"
    with lease(path, print, renew_seconds=0.1):
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5


def test_where_flock_fails_the_lock_is_a_lease(tmp_path, monkeypatch):
    def no_flock(handle, operation):
        if operation != lock.fcntl.LOCK_UN:
            raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    monkeypatch.delenv("LOTTERY_LOCK", raising=False)
    with lock.locked(tmp_path):
        assert (tmp_path / ".lease").exists()
    monkeypatch.setenv("LOTTERY_LOCK", "flock")
    with pytest.raises(ConfigError, match=r"cannot flock .*LOTTERY_LOCK=lease"), lock.locked(
        tmp_path
    ):
        pass


def test_a_bad_lock_choice_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_LOCK", "nfs")
    bad = r"LOTTERY_LOCK='nfs' is not a lock; choose one of"
    with pytest.raises(ConfigError, match=bad), lock.locked(tmp_path):
        pass
