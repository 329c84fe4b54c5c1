"""Shared helpers: compose configs through Hydra exactly as the command line does."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# JAX's warning when it reads a cache entry still being written (then it compiles instead).
TORN_CACHE_READ = "ignore:Error reading persistent compilation cache entry:UserWarning"


def _share_one_compilation_cache() -> None:
    """One JAX persistent compilation cache for this test session, set before jax is imported.

    Most of the suite's time is XLA compiling the same small programs again: in each test
    worker and in every ``python -m lottery`` subprocess (they inherit the environment). The
    session's first process (pytest-xdist's controller, or the only one) makes an empty folder
    and removes it at exit, so every session starts cold, as on a fresh clone; a cached
    executable is the one XLA would compile (the key covers the program, jax version and
    flags), so results are unchanged.

    JAX writes an entry in place, so a process can read one another is still writing: it
    warns ("Error reading persistent compilation cache entry ... truncated stream") and
    compiles the program itself, the same result. That warning is silenced here (the tests
    count stderr lines). JAX's file lock (``jax_compilation_cache_max_size``) would prevent
    the torn read, but it rescans the whole cache on every write and polls for the lock:
    it made the suite slower than no cache at all.
    """
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="lottery-tests-jax-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["PYTHONWARNINGS"] = ",".join(
        filter(None, [os.environ.get("PYTHONWARNINGS"), TORN_CACHE_READ])
    )
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_share_one_compilation_cache()

# The user's GLIBC_TUNABLES ("" if unset), as the session's first process found it: the test
# workers, started after _huge_pages_for_every_process, inherit it here.
USER_GLIBC_TUNABLES = "LOTTERY_TESTS_USER_GLIBC_TUNABLES"


def _huge_pages_for_every_process() -> None:
    """The test workers and every ``python -m lottery`` subprocess start with malloc's huge
    pages, as the command gives itself (:mod:`lottery.kernels.huge_pages`): the convolutional tests
    run faster and no subprocess restarts itself. ``test_huge_pages`` and the wheel test run
    the command with the user's own setting, to check the restart."""
    from lottery.kernels import huge_pages

    os.environ.setdefault(USER_GLIBC_TUNABLES, os.environ.get("GLIBC_TUNABLES", ""))

    environ = huge_pages.environment_here(os.environ)
    if environ is not None:
        os.environ["GLIBC_TUNABLES"] = environ["GLIBC_TUNABLES"]


_huge_pages_for_every_process()
ORIGINAL_GLIBC_TUNABLES = os.environ[USER_GLIBC_TUNABLES] or None


def _cpu_settings_for_every_process() -> None:
    """The test processes and their subprocesses run with the command line's CPU settings
    (``lottery.use_cpu_settings``: XLA's Eigen convolutions), set before JAX starts, as the
    command gives them to itself; importing ``lottery`` sets nothing."""
    import lottery

    lottery.use_cpu_settings()


_cpu_settings_for_every_process()

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lottery.cli import CONFIG_DIR, plain_experiment  # noqa: E402
from lottery.config import Config, register  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# A small, fast experiment on scikit-learn's digits (real data shipped with scikit-learn).
DIGITS = [
    "dataset=digits",
    "model.hidden=[64,32]",
    "train.steps=200it",
    "train.batch_size=50",
    "train.eval_every=50it",
    "pruning.levels=2",
    "progress=false",
    "branches=[]",
]


def cases(
    table: list[tuple], slow: frozenset[str] | set[str] = frozenset()
) -> list[pytest.param]:
    """A parametrize table whose rows are named by their first value; the rows named in
    ``slow`` (large networks: seconds each) run only in the whole suite, not the fast tier."""
    return [
        pytest.param(*row, id=row[0], marks=[pytest.mark.slow] if row[0] in slow else [])
        for row in table
    ]


def make_config(overrides: list[str], results_root: Path | None = None) -> Config:
    """The typed config that ``python -m lottery <overrides>`` would run."""
    register()
    extra = [f"results_root={results_root}"] if results_root is not None else []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=plain_experiment([*overrides, *extra]))
    return OmegaConf.to_object(cfg)


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m lottery ARGS`` in a subprocess (the real entry point)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "lottery", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summaries(root: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Every level's summary.json under ``root`` (branches left out), by (replicate, level)."""
    found = {}
    for file in root.rglob("summary.json"):
        summary = json.loads(file.read_text())
        if summary.get("branch", "imp") == "imp":
            found[(summary["replicate"], summary["level"])] = summary
    return found


@pytest.fixture
def digits_overrides() -> list[str]:
    return list(DIGITS)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The Debian package's Fashion-MNIST IDX files, installed by apt if missing (needs root).

    Under a lock: the test workers (pytest-xdist) must not run apt at the same time.
    """
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "lottery-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not FASHION_MNIST_DIR.is_dir():
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True, env=env
            )
    return FASHION_MNIST_DIR


def store_contents(root: Path, ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every file of a store that records results, by relative path, for comparing two
    stores bit for bit: arrays by their bytes, summaries without their timings; the lock,
    the plot, the invocations' Hydra records (``.hydra/``: one per command run, so a killed
    and rerun store has more) and the names in ``ignore`` left out."""
    import numpy as np

    contents: dict[str, Any] = {}
    for file in sorted(Path(root).rglob("*")):
        if not file.is_file() or file.name in {".lock", "sparsity_accuracy.png", *ignore}:
            continue
        relative = str(file.relative_to(root))
        if ".hydra" in file.relative_to(root).parts:
            continue
        if file.suffix == ".npz":
            contents[relative] = {k: v.tobytes() for k, v in np.load(file).items()}
        elif file.name == "summary.json":
            summary = json.loads(file.read_text())
            summary.pop("timing")
            contents[relative] = summary
        else:
            contents[relative] = file.read_bytes()
    return contents
