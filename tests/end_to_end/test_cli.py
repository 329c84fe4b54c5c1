"""The command line: bad input stops with one clear line; good runs write the store."""

import csv

import pytest

from conftest import DIGITS, run_cli, summaries

# A few bad inputs against a finished store, which must stay untouched; every bad input we
# know of (66) runs through tests/bad_inputs.py, in test_bad_inputs.py.
BAD = {
    "unknown key": (["train.bogus=1"], "bogus"),
    "unknown model": (["model.name=resnet9000"], "unknown model 'resnet9000'; choose one of"),
    "rewind past the end": (
        ["pruning.rewind_step=12ep"],
        "pruning.rewind_step='12ep' (312 iterations) is at or past the end of training",
    ),
    "missing idx dir": (
        ["dataset=fashion_mnist_idx", "dataset.path=/nonexistent/fmnist"],
        "IDX directory /nonexistent/fmnist does not exist; install Fashion-MNIST with",
    ),
}


@pytest.fixture(scope="session")  # with its tests' xdist_group: made once
def finished_store(tmp_path_factory):
    """A results root holding one finished experiment, which bad runs must leave untouched."""
    root = tmp_path_factory.mktemp("store")
    good = run_cli(
        [
            *DIGITS,
            "pruning.levels=0",
            "train.steps=50it",
            "train.eval_every=25it",
            f"results_root={root}",
        ],
        root,
    )
    assert good.returncode == 0, good.stderr
    return root


@pytest.mark.slow  # trains a store first; tests/bad_inputs.py holds the other bad inputs
@pytest.mark.xdist_group("cli_finished_store")  # one worker: finished_store is made once
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_non_zero_with_one_line_and_keeps_what_was_written(case, finished_store):
    overrides, expected = BAD[case]
    before = {p: p.read_bytes() for p in finished_store.rglob("*") if p.is_file()}

    result = run_cli(
        [*DIGITS, "train.steps=300it", *overrides, f"results_root={finished_store}"], finished_store
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    after = {p: p.read_bytes() for p in finished_store.rglob("*") if p.is_file()}
    assert after == before, "bad input changed or added files"
    assert not list(finished_store.rglob("*.partial"))


@pytest.mark.slow
def test_default_experiment_runs_end_to_end_and_a_rerun_only_prints_the_table(tmp_path):
    # The default as shipped (11 levels, both controls), 1,000 iterations per training
    # instead of 3,000 to keep the suite short.
    args = [f"results_root={tmp_path}", "train.steps=1000it"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    found = summaries(tmp_path)
    assert sorted(found) == [(0, level) for level in range(11)]
    assert found[(0, 10)]["weights_remaining_pct"] == pytest.approx(10.74, abs=0.01)
    assert found[(0, 0)]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    experiment = next(tmp_path.glob("mnist1d_imp/*"))
    rows = list(csv.DictReader((experiment / "curve.csv").open()))
    assert [int(r["level"]) for r in rows if r["branch"] == "imp"] == list(range(11))
    for control in ("random_reinit", "random_prune"):  # the default's controls, every level
        assert [int(r["level"]) for r in rows if r["branch"] == control] == list(range(1, 11))
    assert "random_reinit" in first.stdout and "random_prune" in first.stdout
    assert (experiment / "sparsity_accuracy.png").stat().st_size > 10_000

    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "weights left, test accuracy" not in again.stdout  # no level was trained
    assert "mnist1d_imp" in again.stdout and "10.74" in again.stdout


@pytest.mark.slow
def test_lenet_on_fashion_mnist_reaches_85_percent_dense(tmp_path, fashion_mnist_dir):
    result = run_cli(
        [
            "+experiment=lenet_fashion_imp",
            "pruning.levels=1",
            "train.steps=3000it",
            f"dataset.path={fashion_mnist_dir}",
            "progress=false",
            f"results_root={tmp_path}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    found = summaries(tmp_path)
    assert found[(0, 0)]["test_accuracy"] >= 0.85
    assert found[(0, 0)]["params_total"] == 266_610
    layers = found[(0, 1)]["layers"]
    assert layers["fc1/kernel"]["remaining"] == 235_200 - 47_040
    assert layers["out/kernel"]["remaining"] == 900


def test_help_lists_every_preset_and_the_main_knobs(tmp_path):
    from conftest import REPO, run_cli

    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    presets = sorted(p.stem for p in (REPO / "lottery" / "conf" / "experiment").glob("*.yaml"))
    listed = result.stdout.split("Presets", 1)[1].split("Main knobs", 1)[0]
    for preset in presets:
        assert preset in listed, preset
    for knob in ("pruning.fraction", "pruning.rewind_step", "train.checkpoint_every", "seed"):
        assert knob in result.stdout


def test_a_sweep_with_a_bad_value_stops_before_any_job(tmp_path):
    from conftest import run_cli

    result = run_cli(["-m", "pruning.fraction=0.2,1.5", "results_root=out"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: pruning.fraction=1.5 must be in [0, 1): it is the fraction of the remaining "
        "weights removed per level (0.2 removes 20%)"
    ]
    assert not (tmp_path / "out").exists()
