"""What the installed jaxlib can do, found by trying it: a probe runs a small program in a
child process (a wrong guess may abort a process: an unknown XLA flag does, and so may a
custom call whose configuration this XLA reads differently) and its verdict is cached per
(probe, jaxlib version, machine), so each is tried once per installation.

The CPU speed-ups of the command line are chosen this way, not by version strings: Eigen's
convolutions instead of YNNPACK's (:mod:`lottery.kernels.xla_cpu`) where this XLA knows the
flag, and oneDNN's forward convolution (:mod:`lottery.kernels.onednn`) where its custom call
runs and agrees with XLA's convolution. :func:`verdicts` says which held, for the run's
summary.

The cache is a JSON file in ``$LOTTERY_CACHE_DIR`` (default ``$XDG_CACHE_HOME/lottery``, or
``~/.cache/lottery``); where it cannot be written, the probe runs again in the next process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from lottery.atomic import atomic_write_json

PROBE_SECONDS = 120  # a child that takes longer counts as failed (and is killed)

_verdicts: dict[str, bool] = {}  # this process's, by probe name


def cache_file() -> Path:
    root = os.environ.get("LOTTERY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lottery"
    )
    return Path(root) / "probes.json"


def installation() -> str:
    """What a verdict holds for: the jaxlib release, the Python and the machine."""
    try:
        jaxlib = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        jaxlib = "none"
    return f"jaxlib {jaxlib}, python {platform.python_version()}, {platform.machine()}"


def _read_cache() -> dict[str, bool]:
    try:
        cached = json.loads(cache_file().read_text())
    except (OSError, ValueError):  # none yet, unreadable, or truncated: probe again
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_cache(key: str, verdict: bool) -> None:
    cached = _read_cache()
    cached[key] = verdict
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_file(), cached)
    except OSError:
        pass  # a read-only home: the next process probes again


def child_environment(xla_flags: str) -> dict[str, str]:
    """The parent's environment on one CPU device with exactly ``xla_flags``."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def passes(name: str, program: str, xla_flags: str = "") -> bool:
    """Whether ``program`` exits 0 in a child Python under ``xla_flags``, cached."""
    if name in _verdicts:
        return _verdicts[name]
    key = f"{name} | {installation()}"
    cached = _read_cache().get(key)
    if isinstance(cached, bool):
        _verdicts[name] = cached
        return cached
    try:
        done = subprocess.run(
            [sys.executable, "-c", program],
            env=child_environment(xla_flags),
            capture_output=True,
            timeout=PROBE_SECONDS,
        )
        verdict = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        verdict = False
    _verdicts[name] = verdict
    _write_cache(key, verdict)
    return verdict


def verdicts() -> dict[str, bool]:
    """The probes this process has asked, and what they found (for the run's summary)."""
    return dict(_verdicts)
