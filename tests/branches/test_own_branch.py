"""A branch of one's own (``branches=[package.module:NAME]``, or an entry point of the group
``lottery.branches``), written to a folder outside the package as the "Your own branch" recipe
of docs/guides/extending.md says, run through the real command line on digits beside a built-in
control with an argument of its own; and the bad ways to name it or its arguments, as one line."""

from __future__ import annotations

import csv
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lottery.config import ConfigError

from conftest import DIGITS, make_config, run_cli
from readme import doc_block

# One worker for the module: its folder (and the dense training its runs share) is made once.
# Runs the command line with branches of one's own: the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own_branch")]

OWN = ["branches=[mybranch:BRANCH,random_reinit]", "+branch.own.fan_in_shuffle.seed=3"]

# A branch whose run's label cannot name a folder: one line when the branch runs.
BAD_BRANCHES = textwrap.dedent(
    """
    import dataclasses

    from mybranch import BRANCH

    SLASHED = dataclasses.replace(
        BRANCH,
        name="slashed",
        runs=lambda inputs, args: [
            dataclasses.replace(run, label="a/b") for run in BRANCH.runs(inputs, args)
        ],
    )
    BUILT_IN_NAME = dataclasses.replace(BRANCH, name="random_reinit")
    """
)


def recipe_command() -> list[str]:
    """The overrides of the recipe's command, after ``python -m lottery``."""
    command = doc_block("Your own branch", "bash").replace("\\\n", " ")
    return [word.strip("'") for word in command.split()[3:]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the package holding the recipe's ``mybranch.py`` (and bad ones)."""
    path = tmp_path_factory.mktemp("own_branch")
    (path / "mybranch.py").write_text(doc_block("Your own branch"))
    (path / "badbranches.py").write_text(BAD_BRANCHES)
    return path


@pytest.fixture(scope="module")
def own_run(folder: Path) -> Path:
    """Two IMP levels with the recipe's branch (seed 3) and random_reinit; its experiment
    folder."""
    done = run_cli([*DIGITS, *OWN, "results_root=results"], cwd=folder)
    assert done.returncode == 0, done.stderr
    (curve,) = (folder / "results").glob("*/*/curve.csv")
    return curve.parent


def _npz(file: Path) -> dict[str, np.ndarray]:
    with np.load(file) as stored:
        return {key: stored[key] for key in stored.files}


def test_the_recipe_command_is_the_one_tested() -> None:
    command = recipe_command()
    assert set(OWN) <= set(command), command
    assert "dataset=digits" in command and "pruning.levels=2" in command


def test_own_branch_is_a_series_and_a_folder_of_each_level(own_run: Path, folder: Path):
    with open(own_run / "curve.csv") as file:
        series = {(row["branch"], int(row["level"])) for row in csv.DictReader(file)}
    for level in (1, 2):
        assert {("imp", level), ("fan_in_shuffle", level), ("random_reinit", level)} <= series
        (branch,) = (own_run / "replicate_0" / f"level_{level}").glob("branch_fan_in_shuffle_*")
        assert json.loads((branch / "summary.json").read_text())["branch_args"] == {"seed": 3}
    assert not list(folder.rglob("__pycache__"))  # the import wrote nothing beside it


@pytest.mark.parametrize("level", [1, 2])
def test_own_branch_redraws_each_units_inputs_and_trains_on_that_mask(own_run: Path, level):
    """What the recipe says: every unit (kernel column) keeps as many inputs as the ticket's,
    not the same ones; the branch trained on that mask (its pruned weights are 0)."""
    level_folder = own_run / "replicate_0" / f"level_{level}"
    (branch,) = level_folder.glob("branch_fan_in_shuffle_*")
    ticket, shuffled = _npz(level_folder / "mask.npz"), _npz(branch / "mask.npz")
    params = _npz(branch / "params.npz")
    kernels = sorted(key for key in ticket if key.endswith("kernel"))
    assert kernels and sorted(shuffled) == sorted(ticket)
    for key in kernels:
        assert (ticket[key].sum(axis=0) == shuffled[key].sum(axis=0)).all(), key
        assert (ticket[key] != shuffled[key]).any(), key
        assert (params["params" + key[4:]][~shuffled[key]] == 0).all(), key
    for key in set(ticket) - set(kernels):  # biases are not prunable: left as they are
        assert (ticket[key] == shuffled[key]).all(), key


def test_own_branch_through_an_entry_point(
    folder: Path, own_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package's ``[project.entry-points."lottery.branches"]``: its name is
    listed as a branch (here the metadata pip would write, on PYTHONPATH). The levels are the
    finished ones; another seed trains new branch folders beside the import path's."""
    site = tmp_path / "site"
    info = site / "mybranches-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "mybranch_pkg.py").write_text(doc_block("Your own branch"))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mybranches\nVersion: 0.1\n")
    points = "[lottery.branches]\nfan_in_shuffle = mybranch_pkg:BRANCH\n"
    (info / "entry_points.txt").write_text(points)
    monkeypatch.setenv("PYTHONPATH", str(site))
    done = run_cli(
        [*DIGITS, "branches=[fan_in_shuffle]", "+branch.own.fan_in_shuffle.seed=4",
         "results_root=results"],
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    for level in (1, 2):
        found = own_run.glob(f"replicate_0/level_{level}/branch_fan_in_shuffle_*/summary.json")
        seeds = sorted(json.loads(path.read_text())["branch_args"]["seed"] for path in found)
        assert seeds == [3, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["branches=[no_such_module:BRANCH]"],
         "branches='no_such_module:BRANCH': module 'no_such_module' does not import"),
        (["branches=[mybranch:runs]"], "is a function, not a lottery.branches.Branch"),
        (["branches=[mybranch:BRANCH]", "+branch.own.fan_in_shuffle.sed=1"],
         "branch.own.fan_in_shuffle.sed is not an argument of branch 'fan_in_shuffle'; its "
         "arguments are seed: int = 0"),
        (["branches=[random_reinit]", "+branch.own.fan_in_shuffle.seed=1"],
         "branch.own.fan_in_shuffle is set but no branch named fan_in_shuffle is in branches"),
    ],
)
def test_a_bad_own_branch_is_one_line_and_writes_nothing(
    folder: Path, args: list[str], message: str
) -> None:
    done = run_cli([*DIGITS, *args, "results_root=bad"], cwd=folder)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not (folder / "bad").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["branches=[mybranch:MISSING]"], "module 'mybranch' has no attribute 'MISSING'"),
        (["branches=[mybranch:]"], "branches='mybranch:' is not an import path"),
        (["branches=[badbranches:BUILT_IN_NAME]"], "is named 'random_reinit', as a built-in"),
        (["branches=[mybranch:BRANCH]", "+branch.own.fan_in_shuffle.seed=1.5"],
         "branch.own.fan_in_shuffle.seed=1.5 is not of the argument's type"),
        (["branches=[mybranch:BRANCH]", "+branch.own.fan_in_shuffle=3"],
         "branch.own.fan_in_shuffle=3 is not a set of arguments"),
        (["branches=[mybranch:BRANCH,mybranch:BRANCH]"], "is listed twice in branches"),
        (["branches=[fan_in_shuffle]"], "unknown branch 'fan_in_shuffle' in branches"),
    ],
)
def test_a_bad_own_branch_is_one_config_error(
    folder: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """The same checks the command runs before anything is written (in this process)."""
    from lottery.branches import check_branches
    from lottery.pruning.strategies import Timeline, strategy_for

    monkeypatch.chdir(folder)
    cfg = make_config([*DIGITS, *args])
    strategy, _ = strategy_for(cfg.pruning)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_branches(cfg, Timeline(70, 200), strategy)


def test_a_run_label_that_cannot_name_a_folder_is_one_line(folder: Path) -> None:
    done = run_cli(
        [*DIGITS, "pruning.levels=1", "branches=[badbranches:SLASHED]", "results_root=slashed"],
        cwd=folder,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "branch 'slashed' returned a run labelled 'a/b'" in lines[0], lines[0]
    assert not list((folder / "slashed").rglob("branch_*"))
