"""Packaging: the configs ship inside the package, the dependencies are ranges that admit the
versions CI tests (constraints.txt), and a built wheel installs and runs from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import lottery
from lottery.cli import CONFIG_DIR

from conftest import ORIGINAL_GLIBC_TUNABLES

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SMOKE = ["train.steps=300it", "pruning.levels=1", "progress=false"]


def constraints(python: str, file: str = "constraints.txt") -> dict[str, str]:
    """The pins of ``file`` (and the files it includes with ``-c``) whose markers hold on
    Python ``python`` ("3.11", "3.12"), as {canonical name: exact version}."""
    pinned = {}
    for line in (REPO / file).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-c "):
            pinned.update(constraints(python, line[3:].strip()))
        elif line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{file}: not an exact pin: {line!r}"
            marker = requirement.marker
            if marker is None or marker.evaluate({"python_version": python}):
                pinned[canonicalize_name(requirement.name)] = spec.version
    return pinned


SETS = {"newest": "3.12", "oldest": "3.11"}  # the two sets CI tests, by their Python


def configs(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*.yaml")}


def test_configs_live_inside_the_package():
    package = Path(lottery.__file__).resolve().parent
    assert package / "conf" == CONFIG_DIR
    assert (CONFIG_DIR / "config.yaml").is_file()
    assert "experiment/mnist1d_imp.yaml" in configs(CONFIG_DIR)
    # The top-level conf/ of a checkout is the same folder (a link), not a second copy.
    if (REPO / "conf").exists():
        assert (REPO / "conf").resolve() == CONFIG_DIR


@pytest.mark.parametrize("pins", SETS)
@pytest.mark.parametrize("group", ["dependencies", "dev"])
def test_dependencies_are_ranges_that_admit_the_tested_versions(group, pins):
    project = PYPROJECT["project"]
    listed = project.get("optional-dependencies", {}).get(group, project["dependencies"])
    pinned = constraints(SETS[pins])
    assert "lottery" not in pinned
    for text in listed:
        requirement = Requirement(text)
        operators = {spec.operator for spec in requirement.specifier}
        assert operators == {">=", "<"}, f"{text}: want a '>=X,<Y' range"
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in the {pins} set of constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]} for Python {SETS[pins]}, outside "
            f"{text}")


def test_the_newest_set_is_newer_than_the_oldest():
    """The markers choose: JAX 0.11 and later exist only for Python 3.12 and later."""
    newest, oldest = constraints("3.12"), constraints("3.11")
    assert set(newest) >= {"jax", "jaxlib", "flax"} and oldest["jax"] == "0.10.2"
    assert Version(newest["jax"]) > Version(oldest["jax"])


def clean_env() -> dict[str, str]:
    """This environment without what would make the new venv see the checkout or this venv,
    or share the suite's compilation cache (a user's install has none, nor ``filelock``),
    and with the user's own ``GLIBC_TUNABLES`` (so the command sets its huge pages itself)."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "GLIBC_TUNABLES"}
    env = {key: value for key, value in os.environ.items()
           if key not in drop and not key.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    if ORIGINAL_GLIBC_TUNABLES is not None:
        env["GLIBC_TUNABLES"] = ORIGINAL_GLIBC_TUNABLES
    return {**env, "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "120",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def check(args: list[str], cwd: Path, timeout: int) -> str:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_from_another_folder(tmp_path):
    """What `pip install .` (or from git) gives a user: not the editable checkout."""
    # Build from a copy of the checkout's files, so that the build leaves nothing in it.
    source = tmp_path / "source"
    shutil.copytree(REPO / "lottery", source / "lottery",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for file in REPO.iterdir():
        if file.is_file():
            shutil.copy2(file, source / file.name)
    wheels = tmp_path / "wheels"
    check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, source],
          tmp_path, timeout=600)
    [wheel] = wheels.glob("lottery-*.whl")

    # A fresh venv that sees this environment's dependencies through a path entry (installing
    # them again from the index takes minutes; .ci/run does that with constraints.txt). A
    # plain path entry runs no .pth file there, so the checkout's editable finder stays off.
    venv = tmp_path / "venv"
    check([sys.executable, "-m", "venv", venv], tmp_path, timeout=300)
    python = venv / "bin" / "python"
    [site_packages] = (venv / "lib").glob("python*/site-packages")
    dependencies = [p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()]
    (site_packages / "dependencies.pth").write_text("".join(f"{p}\n" for p in dependencies))
    check([python, "-m", "pip", "install", "-q", "--no-deps", wheel], tmp_path, timeout=600)
    check([python, "-m", "pip", "check"], tmp_path, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = check([python, "-c", "import lottery, lottery.cli as c; "
                   "print(lottery.__file__); print(c.CONFIG_DIR)"], elsewhere, timeout=300)
    installed = (venv / "lib").resolve()
    package_file, config_dir = (Path(line) for line in where.split())
    assert package_file.is_relative_to(installed), package_file
    assert config_dir.is_relative_to(installed), config_dir
    assert configs(config_dir) == configs(CONFIG_DIR)  # every config shipped

    results = tmp_path / "results"
    out = check([python, "-m", "lottery", *SMOKE, f"results_root={results}"], elsewhere,
                timeout=900)
    [curve] = results.rglob("curve.csv")
    assert len(curve.read_text().splitlines()) >= 3, out  # a header and two levels
    # The `lottery` script finds the configs too (it used to look for a module named conf).
    check([venv / "bin" / "lottery", "+experiment=lenet_openlth", "--cfg", "job"], elsewhere,
          timeout=300)
