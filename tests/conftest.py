"""Shared helpers: compose configs through Hydra exactly as the command line does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lottery.cli import CONFIG_DIR
from lottery.config import Config, register

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


def make_config(overrides: list[str], results_root: Path | None = None) -> Config:
    """The typed config that ``python -m lottery <overrides>`` would run."""
    register()
    extra = [f"results_root={results_root}"] if results_root is not None else []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *extra])
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
