"""Importing lottery changes nothing in the process: environment, XLA_FLAGS, warnings filters.
The command line and lottery.use_cpu_settings() set the CPU settings where they are asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lottery.kernels.xla_cpu import CACHE_WRITE_WARNING, EIGEN_CONVOLUTIONS

MODULES = "lottery, lottery.pruning, lottery.models, lottery.train, lottery.experiment"
# The libraries lottery builds on, imported first: what they do on import is theirs (JAX
# sets TF_CPP_MIN_LOG_LEVEL, NumPy adds warnings filters).
LIBRARIES = "jax, flax.linen, optax, orbax.checkpoint, hydra, omegaconf, numpy, pandas, rich"

BEFORE_AND_AFTER = f"""
import json, os, sys, warnings
flags_at_start = os.environ.get("XLA_FLAGS")
import {LIBRARIES}
before = dict(os.environ), list(warnings.filters)
assert before[0].get("XLA_FLAGS") == flags_at_start
import {MODULES}
after = dict(os.environ), list(warnings.filters)
if "--settings" in sys.argv:
    lottery.use_cpu_settings()
settings = dict(os.environ), list(warnings.filters)
print(json.dumps({{
    "flags": [state[0].get("XLA_FLAGS") for state in (before, after, settings)],
    "environ_kept": before[0] == after[0],
    "filters": [len(state[1]) for state in (before, after, settings)],
    "filters_kept": before[1] == after[1],
    "cache_warning_ignored": any(
        f[0] == "ignore" and f[1] is not None and f[1].pattern == {CACHE_WRITE_WARNING!r}
        for f in settings[1]),
}}))
"""


def imported(xla_flags: str | None, *args: str) -> dict:
    """What the probe saw before and after importing the modules (and calling the settings)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONWARNINGS")}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run(
        [sys.executable, "-c", BEFORE_AND_AFTER, *args],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("xla_flags", [None, "--xla_cpu_enable_fast_math=false"])
def test_importing_lottery_leaves_the_environment_and_warnings_filters_as_they_were(
    xla_flags: str | None,
) -> None:
    seen = imported(xla_flags)
    assert seen["flags"][:2] == [xla_flags, xla_flags]
    assert seen["environ_kept"] and seen["filters_kept"]
    assert seen["filters"][0] == seen["filters"][1]


def test_use_cpu_settings_adds_the_flag_to_the_users_and_silences_only_the_cache_warning() -> None:
    seen = imported("--xla_cpu_enable_fast_math=false", "--settings")
    assert seen["flags"][2] == f"--xla_cpu_enable_fast_math=false {EIGEN_CONVOLUTIONS}"
    assert seen["filters"][2] == seen["filters"][1] + 1 and seen["cache_warning_ignored"]
