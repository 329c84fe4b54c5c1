"""What the installed jaxlib can do is found by trying it in a child process, once per
installation (lottery.kernels.probes): a child that aborts (an unknown XLA flag does) is a "no"."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lottery.kernels import probes, xla_cpu


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty verdict cache of its own, and no verdicts in this process."""
    monkeypatch.setenv("LOTTERY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(probes, "_verdicts", {})
    return tmp_path / "probes.json"


def test_a_passing_probe_is_cached_per_installation(fresh, monkeypatch):
    assert probes.passes("ok", "import sys; sys.exit(0)")
    cached = json.loads(fresh.read_text())
    assert cached == {f"ok | {probes.installation()}": True}

    def no_child(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(probes, "_verdicts", {})  # a new process: the file answers
    monkeypatch.setattr(subprocess, "run", no_child)
    assert probes.passes("ok", "import sys; sys.exit(0)")
    assert probes.verdicts() == {"ok": True}


def test_a_child_that_aborts_or_fails_is_a_no(fresh):
    assert not probes.passes("abort", "import os; os.abort()")
    assert not probes.passes("raise", "raise SystemExit(3)")
    assert json.loads(fresh.read_text())[f"abort | {probes.installation()}"] is False


def test_an_unknown_xla_flag_is_a_no_and_a_known_one_a_yes(fresh):
    """XLA aborts the process on a flag it does not know: the command would die at its
    first computation, so the flag is only set where the child survived it."""
    assert not probes.passes("unknown", xla_cpu.FLAG_PROBE, "--xla_no_such_flag=1")
    assert probes.passes("eigen", xla_cpu.FLAG_PROBE, xla_cpu.EIGEN_CONVOLUTIONS)


def test_a_truncated_or_unwritable_cache_probes_again(fresh, tmp_path, monkeypatch):
    fresh.write_text('{"ok | ')
    assert probes.passes("ok", "pass")
    assert json.loads(fresh.read_text())[f"ok | {probes.installation()}"] is True
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("LOTTERY_CACHE_DIR", str(blocked / "sub"))  # cannot be made
    monkeypatch.setattr(probes, "_verdicts", {})
    assert probes.passes("ok", "pass")


def test_the_flag_is_not_set_where_xla_does_not_know_it(fresh, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    monkeypatch.setattr(xla_cpu, "FLAG_PROBE", "import os; os.abort()")  # as an older XLA
    assert not xla_cpu.prefer_eigen_convolutions()
    assert xla_cpu.EIGEN_CONVOLUTIONS not in os.environ["XLA_FLAGS"]
    assert probes.verdicts() == {"eigen_convolutions_flag": False}
