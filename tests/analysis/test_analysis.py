"""Reading results into DataFrames, the report command, the figures and the notebooks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from lottery.analysis import (
    RESULT_COLUMNS,
    aggregate,
    load_metrics,
    load_results,
    load_wandb,
    plot_accuracy_vs_weights,
    plot_early_stopping,
    plot_training_curves,
)
from lottery.analysis import plots as plots_module
from lottery.experiment import run as run_experiment

from conftest import DIGITS, REPO, make_config

# On one worker, and store3 (three trained replicates) session-scoped: a module-scoped
# fixture is made again each time the worker comes back to this module.
pytestmark = pytest.mark.xdist_group("analysis")

SEEDS = (0, 1, 2)
FAST = [*DIGITS, "train.steps=100it", "train.eval_every=25it"]  # levels 0-2, 5 evaluations


@pytest.fixture(scope="session")
def store3(tmp_path_factory):
    """A results root with one experiment and three replicates (real, short runs)."""
    root = tmp_path_factory.mktemp("results")
    for seed in SEEDS:
        store, _ = run_experiment(make_config([*FAST, f"seed={seed}"], root))
    return root, store.path


def test_load_results_has_the_documented_schema_and_the_summaries(store3):
    root, experiment = store3
    df = load_results(root)
    assert tuple(df.columns) == RESULT_COLUMNS
    assert len(df) == 3 * 3
    assert df["replicate"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert df["level"].tolist() == [0, 1, 2] * 3
    assert set(df["branch"]) == {"imp"} and set(df["hash"]) == {experiment.name}
    assert str(df["early_stop_iteration"].dtype) == "Int64"
    for row in df.itertuples():
        summary = json.loads((Path(row.path) / "summary.json").read_text())
        assert row.test_accuracy == summary["test_accuracy"]
        assert row.weights_remaining_pct == summary["weights_remaining_pct"]
        assert row.early_stop_iteration == summary["early_stop_iteration"]
        assert row.params_remaining == summary["params_remaining"]
        assert row.wall_seconds == summary["timing"]["wall"]
    # The same rows from the experiment folder, a glob, or summary files (once each).
    pd.testing.assert_frame_equal(load_results(experiment), df)
    pd.testing.assert_frame_equal(load_results(f"{root}/*/*", root), df)
    files = load_results(f"{experiment}/replicate_1/level_*/summary.json")
    assert files["replicate"].tolist() == [1, 1, 1]
    with pytest.raises(FileNotFoundError):
        load_results(root / "missing")
    with pytest.raises(FileNotFoundError):
        load_results(f"{root}/nothing*")
    empty = load_results(experiment / "replicate_0" / "level_1" / "mask.npz")
    assert empty.empty and tuple(empty.columns) == RESULT_COLUMNS


def test_load_metrics_has_every_evaluation(store3):
    root, experiment = store3
    metrics = load_metrics(root)
    assert list(metrics.columns[:7]) == [
        "experiment",
        "hash",
        "replicate",
        "level",
        "branch",
        "weights_remaining_pct",
        "iteration",
    ]
    assert len(metrics) == 3 * 3 * 5
    assert metrics["iteration"].tolist()[:5] == [0, 25, 50, 75, 100]
    lines = (experiment / "replicate_2" / "level_1" / "metrics.jsonl").read_text().splitlines()
    rows = metrics[(metrics["replicate"] == 2) & (metrics["level"] == 1)]
    assert rows["test/accuracy"].tolist() == [json.loads(x)["test/accuracy"] for x in lines]


def test_aggregate_over_three_replicates(store3):
    root, _ = store3
    df = load_results(root)
    stats = aggregate(df)
    assert len(stats) == 3
    assert stats["count"].tolist() == [3, 3, 3]
    level1 = df[df["level"] == 1]["test_accuracy"].to_numpy()
    row = stats[stats["level"] == 1].iloc[0]
    assert row["test_accuracy_mean"] == pytest.approx(level1.mean())
    assert row["test_accuracy_std"] == pytest.approx(level1.std(ddof=1))
    assert row["test_accuracy_min"] == level1.min() and row["test_accuracy_max"] == level1.max()
    assert row["weights_remaining_pct"] == pytest.approx(80.0, abs=0.01)


def test_report_prints_the_table_and_writes_figures(store3, tmp_path):
    root, _ = store3
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "lottery.report", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "mean ± std over replicates" in result.stdout
    assert "80.00" in result.stdout and "64.00" in result.stdout
    for name in ("accuracy_vs_weights", "early_stopping", "training_curves"):
        for suffix in (".png", ".pdf"):
            assert (out / f"{name}{suffix}").stat().st_size > 1000, name + suffix
    stats = pd.read_csv(out / "aggregate.csv")
    assert stats["count"].tolist() == [3, 3, 3]

    missing = subprocess.run(
        [sys.executable, "-m", "lottery.report", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ")


def synthetic_results(series=2, replicates=3, levels=4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(series):
        for r in range(replicates):
            for level in range(levels):
                rows.append(
                    {
                        "experiment": "toy",
                        "hash": f"h{s}",
                        "replicate": r,
                        "level": level,
                        "branch": "imp",
                        "weights_remaining_pct": 100 * 0.8**level,
                        "test_accuracy": 0.9 + 0.01 * rng.normal(),
                        "best_test_accuracy": 0.95,
                        "early_stop_iteration": int(rng.integers(100, 200)),
                        "early_stop_test_accuracy": 0.9,
                        "params_remaining": 100,
                        "wall_seconds": 1.0,
                        "path": "",
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("band", "bands"), [("std", 2), ("minmax", 2), (None, 0)])
def test_accuracy_plot_has_a_line_and_a_band_per_series(tmp_path, monkeypatch, band, bands):
    figures = []
    original = plots_module.save_figure
    monkeypatch.setattr(
        plots_module, "save_figure", lambda fig, path: (figures.append(fig), original(fig, path))[1]
    )
    png, pdf = plot_accuracy_vs_weights(synthetic_results(), tmp_path / "acc", band=band)
    assert png.name == "acc.png" and pdf.name == "acc.pdf"
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    [ax] = figures[0].axes
    assert len(ax.lines) == 2
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == bands
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "toy [h0] (n=3)",
        "toy [h1] (n=3)",
    ]


def test_early_stopping_and_training_curve_plots(store3, tmp_path):
    root, _ = store3
    paths = plot_early_stopping(load_results(root), tmp_path / "es.png")
    paths += plot_training_curves(load_metrics(root), tmp_path / "tc", levels=[0, 2])
    assert [p.name for p in paths] == ["es.png", "es.pdf", "tc.png", "tc.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    no_validation = load_results(root).assign(early_stop_iteration=pd.NA)
    with pytest.raises(ValueError, match="early-stopping"):
        plot_early_stopping(no_validation, tmp_path / "none")


class FakeRun:
    def __init__(self, config, history, url):
        self.config, self._history, self.url = config, history, url

    def scan_history(self):
        return iter(self._history)


class FakeApi:
    def __init__(self, runs):
        self._runs = runs
        self.asked = []

    def runs(self, path):
        self.asked.append(path)
        return self._runs


def test_load_wandb_gives_the_same_schema():
    def level_row(level, accuracy):
        return {
            "level": level,
            "prune/weights_remaining": 100 * 0.8**level,
            "prune/params_remaining": 50,
            "curve/test_accuracy": accuracy,
            "curve/best_test_accuracy": accuracy,
            "curve/early_stop_iteration": 150,
            "curve/early_stop_test_accuracy": accuracy,
            "curve/wall_seconds": 2.0,
        }

    eval_row = {"level": 0, "iteration": 50, "test/accuracy": 0.5}
    runs = [
        FakeRun(
            {"name": "exp", "seed": 1, "hash": "abc"},
            [eval_row, level_row(0, 0.9), level_row(1, 0.8), level_row(1, 0.85)],
            "https://wandb.ai/team/lottery/runs/abc-r1",
        ),
        FakeRun({"name": "other project code"}, [level_row(0, 0.1)], "https://x"),
    ]
    api = FakeApi(runs)
    df = load_wandb("lottery", entity="team", api=api)
    assert api.asked == ["team/lottery"]
    assert tuple(df.columns) == RESULT_COLUMNS
    assert df["level"].tolist() == [0, 1]
    assert df["test_accuracy"].tolist() == [0.9, 0.85]  # a level logged twice: the last
    assert set(df["experiment"]) == {"exp"} and set(df["replicate"]) == {1}
    assert df["branch"].tolist() == ["imp", "imp"]
    assert aggregate(df)["count"].tolist() == [1, 1]


NOTEBOOKS = {
    "sparsity_accuracy.ipynb": "sparsity_accuracy",
    "training_curves.ipynb": "training_curves",
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_headless_and_writes_its_figure(store3, tmp_path, name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    root, _ = store3
    notebook = nbformat.read(REPO / "experiments" / name, as_version=4)
    [parameters] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert notebook.cells.index(parameters) == min(
        i for i, c in enumerate(notebook.cells) if c.cell_type == "code"
    )
    assert 'results = "../results"' in parameters.source
    parameters.source = parameters.source.replace('"../results"', repr(str(root)))
    run_dir = tmp_path / "experiments"
    run_dir.mkdir()
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": run_dir}}
    )
    client.execute()
    figure = NOTEBOOKS[name]
    for suffix in (".png", ".pdf"):
        assert (run_dir / f"{figure}{suffix}").stat().st_size > 1000
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_own_model_own_loop_notebook_trains_a_mask_by_hand_and_runs_lottery(tmp_path):
    """``experiments/own_model_own_loop.ipynb``: its hand-written loop keeps the pruned
    weights at +0.0 (the notebook asserts it at each level) and ``lottery.run`` writes its
    store under the notebook's ``results_root`` and returns one row per level and branch."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(REPO / "experiments" / "own_model_own_loop.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    [parameters] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert 'results_root = "../results"' in parameters.source
    results = tmp_path / "results"
    parameters.source = parameters.source.replace('"../results"', repr(str(results)))
    parameters.source = parameters.source.replace("steps = 300", "steps = 150")
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    text = "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    assert text.count("pruned weights all +0.0") == 2, text
    assert "64.00% of the kernels' weights left" in text, text
    table = [line.split() for line in text.splitlines() if "imp" in line or "reinit" in line]
    assert {(row[0], row[1]) for row in table if len(row) == 4} >= {
        ("0", "imp"), ("2", "imp"), ("2", "random_reinit")
    }, text
    assert len(list(results.glob("*/*/replicate_0/level_2/summary.json"))) == 1


# -- the sparsity–accuracy figure: legends outside, names not hashes, controls from dense --


@pytest.fixture(scope="session")
def two_fractions(tmp_path_factory):
    """A results root with one experiment at two pruning fractions, each with a control
    (real, short runs; the dense level is trained once and shared)."""
    root = tmp_path_factory.mktemp("two_fractions")
    stores = {}
    for fraction in ("0.2", "0.5"):
        overrides = [*FAST, f"pruning.fraction={fraction}", "branches=[random_reinit]"]
        stores[fraction], _ = run_experiment(make_config(overrides, root))
    return root, stores


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, as they were when saved."""
    figures = []
    original = plots_module._save_atomically

    def keeping(fig, path, fmt):
        figures.append(fig)
        original(fig, path, fmt)

    monkeypatch.setattr(plots_module, "_save_atomically", keeping)
    return figures


def legends_of(ax):
    from matplotlib.legend import Legend

    return [child for child in ax.get_children() if isinstance(child, Legend)]


def assert_legends_outside_and_saved(fig, ax):
    """Every legend lies beside the axes (no overlap with the data area) and inside the
    area that is saved (``bbox_inches="tight"``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the canvas of the figure, closed when saved
    fig.draw(renderer)
    axes = ax.get_window_extent(renderer)
    saved = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    legends = legends_of(ax)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not box.overlaps(axes), (box, axes)
        assert box.x0 >= axes.x1
        assert saved.x0 <= box.x0 + 1 and box.x1 <= saved.x1 + 1, (box, saved)


def entries(legend):
    return [text.get_text() for text in legend.get_texts()]


def control_starts_at_dense(ax, colors):
    """Every line of a control's colour starts at the main line's dense point."""
    [main_color, *control_colors] = colors
    [dense_line] = [line for line in ax.lines if line.get_color() == main_color][:1]
    for color in control_colors:
        lines = [line for line in ax.lines if line.get_color() == color]
        assert lines
        for line in lines:
            assert line.get_xdata()[0] == pytest.approx(100.0)
            assert line.get_ydata()[0] == pytest.approx(dense_line.get_ydata()[0])


def test_report_figure_names_series_by_overrides_with_one_entry_each(
    two_fractions, tmp_path, drawn
):
    root, stores = two_fractions
    digests = {fraction: store.path.name for fraction, store in stores.items()}
    plot_accuracy_vs_weights(
        load_results(root), tmp_path / "acc", metric=["test_accuracy", "early_stop_test_accuracy"]
    )
    fig = drawn[0]
    [ax] = fig.axes
    assert_legends_outside_and_saved(fig, ax)
    series, key = legends_of(ax)
    assert entries(series) == [
        f"mnist1d_imp pruning.fraction={fraction} {branch} (n=1)"
        for fraction in ("0.2", "0.5")
        for branch in ("imp", "random_reinit")
    ]
    assert entries(key) == ["final", "at early stop (min. validation loss)"]
    texts = [t.get_text() for t in ax.texts]
    assert not any(d in label for d in digests.values() for label in entries(series))
    [footnote] = [t for t in texts if t.startswith("hashes:")]
    assert f"mnist1d_imp pruning.fraction=0.2 = {digests['0.2']}" in footnote
    assert f"mnist1d_imp pruning.fraction=0.5 = {digests['0.5']}" in footnote
    colors = [handle.get_color() for handle in series.legend_handles]
    control_starts_at_dense(ax, colors[:2])
    control_starts_at_dense(ax, colors[2:])


def test_store_plot_is_the_same_figure(two_fractions, drawn):
    _, stores = two_fractions
    store = stores["0.5"]
    path = store.path / "sparsity_accuracy.png"
    plots_module.plot_sparsity_accuracy(store.write_curve(), path, "a title")
    fig = drawn[0]
    [ax] = fig.axes
    assert_legends_outside_and_saved(fig, ax)
    series, key = legends_of(ax)
    assert entries(series) == ["mnist1d_imp imp (n=1)", "mnist1d_imp random_reinit (n=1)"]
    assert len(entries(key)) == 2
    [footnote] = [t.get_text() for t in ax.texts]
    assert footnote.startswith(f"hash {store.path.name}: mnist1d_imp, ")
    assert "pruning.fraction=0.5" in footnote
    control_starts_at_dense(ax, [handle.get_color() for handle in series.legend_handles])


def test_early_stopping_figure_has_its_legend_outside(two_fractions, tmp_path, drawn):
    root, _ = two_fractions
    plot_early_stopping(load_results(root), tmp_path / "es")
    fig = drawn[0]
    left, right = fig.axes
    assert_legends_outside_and_saved(fig, right)
    [series] = legends_of(right)
    assert len(entries(series)) == 4 and not legends_of(left)
