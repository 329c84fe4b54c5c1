"""A store with branches: ``level_<L>/branch_<name>_<hash>/`` beside the main IMP line."""

import pandas as pd

from lottery import experiment
from lottery.analysis import aggregate, load_results
from lottery.analysis.plots import plot_sparsity_accuracy

from conftest import make_config


def add_branch(store, level, name, digest, accuracy):
    """Write a finished branch of ``level`` through the store's own writer (as a branch
    function will): its mask, weights, metrics and summary."""
    replicate = store.replicate(0)
    summary = replicate.summary(level) | {"branch": name, "test_accuracy": accuracy}
    folder = replicate.partial_branch(level, name, digest)
    folder.path.mkdir(parents=True)
    folder.save_mask(replicate.mask(level))
    folder.save_weights(*replicate.params(level))
    folder.log({"iteration": 0, "test/accuracy": accuracy})
    folder.finish(summary)
    return replicate.branch_path(level, name, digest)


def test_branches_are_rows_of_the_curve_and_series_of_the_tables(tmp_path, digits_overrides):
    store, _ = experiment.run(make_config(digits_overrides, tmp_path))
    for level, accuracy in ((1, 0.25), (2, 0.125)):
        path = add_branch(store, level, "random_reinit", "0123abcd", accuracy)
        assert path.name == "branch_random_reinit_0123abcd" and path.parent.name == f"level_{level}"
    (store.replicate(0).level_path(2) / "branch_lr_rewind_99.partial").mkdir()  # unfinished

    rows = store.write_curve()
    assert [(r["level"], r["branch"]) for r in rows] == [
        (0, "imp"), (1, "imp"), (1, "random_reinit"), (2, "imp"), (2, "random_reinit"),
    ]
    header, *lines = store.curve_file.read_text().splitlines()
    assert header.split(",")[:3] == ["replicate", "level", "branch"]
    assert lines[2].startswith("0,1,random_reinit,")

    df = load_results(tmp_path)
    assert set(df["hash"]) == {store.path.name}
    branch = df[df["branch"] == "random_reinit"]
    assert branch["test_accuracy"].tolist() == [0.25, 0.125]
    stats = aggregate(df)
    assert sorted(stats.groupby("branch").size().items()) == [("imp", 3), ("random_reinit", 2)]
    pd.testing.assert_frame_equal(load_results(store.path), df)

    plot = plot_sparsity_accuracy(rows, tmp_path / "curve.png")
    assert plot.is_file() and plot.stat().st_size > 0
