"""The "Extending" recipes of docs/guides/extending.md together: a model, a dataset and a pruning
method of one's own, in a package outside ``lottery/`` (``mylab/``, its files copied from the
page's code blocks), run end to end through the real command line with both controls; then the
store's ``curve.csv``, ``python -m lottery.report`` and ``lottery.load`` on it; and the same
method by an entry point's name."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lottery
from lottery.data.generated import digits
from lottery.pruning import flatten

from conftest import run_cli
from readme import doc_block

BRANCHES = ("imp", "random_reinit", "random_prune")


def write_package(root: Path) -> None:
    """``root/mylab`` (the page's model and method) and ``root/mine.npz`` (its data line,
    run on scikit-learn's digits as (N, 8, 8, 1) float images, NHWC as the Conv needs)."""
    package = root / "mylab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(doc_block("Your own model"))
    (package / "methods.py").write_text(doc_block("Your own pruning method"))
    x_train, y_train, x_test, y_test = digits()
    names = {"np": np, "x_train": x_train, "y_train": y_train, "x_test": x_test,
             "y_test": y_test}
    save = doc_block("Your own data").replace('"mine.npz"', repr(str(root / "mine.npz")))
    exec(save, names)


def write_entry_point(root: Path) -> None:
    """The metadata pip writes for a package whose ``pyproject.toml`` has the page's
    ``[project.entry-points."lottery.methods"]`` line (as tests/pruning/test_own_method.py does)."""
    info = root / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    points = "[lottery.methods]\nlargest_first = mylab.methods:STRATEGY\n"
    (info / "entry_points.txt").write_text(points)


def command(method: str, results: str, data: str | Path = "mine.npz") -> list[str]:
    return [
        "model.name=mylab.models:Net",
        "++model.kwargs={width:16}",
        "dataset.name=npz",
        f"dataset.path={data}",
        "dataset.validation_size=100",
        "dataset.normalize=false",
        f"pruning.method={method}",
        "pruning.levels=1",
        "branches=[random_reinit,random_prune]",
        "train.steps=100it",
        "train.batch_size=50",
        "train.eval_every=50it",
        "progress=false",
        f"results_root={results}",
    ]


def experiment_of(results: Path) -> Path:
    (curve,) = results.glob("*/*/curve.csv")
    return curve.parent


def curve_series(experiment: Path) -> set[tuple[str, int]]:
    with open(experiment / "curve.csv") as file:
        return {(row["branch"], int(row["level"])) for row in csv.DictReader(file)}


@pytest.mark.slow
def test_own_model_data_and_method_in_a_package_of_ones_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path)
    done = run_cli(command("mylab.methods:STRATEGY", "results"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    experiment = experiment_of(tmp_path / "results")
    assert {("imp", 0), *((b, 1) for b in BRANCHES)} <= curve_series(experiment)
    hashed = json.loads((experiment / "hashed.json").read_text())
    assert hashed["model.name"] == "mylab.models:Net"
    assert hashed["pruning.method"] == "mylab.methods:STRATEGY"
    assert hashed["dataset.name"] == "npz"

    out = tmp_path / "report"
    report = subprocess.run(
        [sys.executable, "-m", "lottery.report", str(tmp_path / "results"), "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr
    assert all(branch in report.stdout for branch in BRANCHES), report.stdout
    assert (out / "accuracy_vs_weights.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "aggregate.csv")) == 4  # dense, IMP and both controls

    # lottery.load imports mylab.models again; its network gives the run's test accuracy
    # (the data was not standardised: dataset.normalize=false).
    monkeypatch.syspath_prepend(str(tmp_path))
    level = experiment / "replicate_0" / "level_1"
    ticket = lottery.load(level)
    x_test, y_test = digits()[2:]
    correct = np.argmax(np.asarray(ticket.predict(x_test)), axis=1) == y_test
    summary = json.loads((level / "summary.json").read_text())
    assert abs(correct.sum() - summary["test_accuracy"] * len(y_test)) <= 1, summary
    masks, weights = flatten(ticket.mask), flatten(ticket.params)
    kernels = [path for path in masks if path.endswith("kernel")]
    kept = sum(int(masks[p].sum()) for p in kernels) / sum(masks[p].size for p in kernels)
    assert kept == pytest.approx(0.8, abs=1e-3)
    assert all(not np.asarray(weights[p])[~np.asarray(masks[p])].any() for p in kernels)

    # The same method by the name its (installed) package's entry point gives it, run from
    # another folder with the package on PYTHONPATH.
    write_entry_point(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_name = command("largest_first", str(tmp_path / "by_name"), tmp_path / "mine.npz")
    done = run_cli(by_name, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    experiment = experiment_of(tmp_path / "by_name")
    assert {(b, 1) for b in BRANCHES} <= curve_series(experiment)
    assert json.loads((experiment / "hashed.json").read_text())["pruning.method"] == (
        "largest_first"
    )
