"""Nothing fails silently: layer collapse is a warning and a field; a level that can prune
nothing more ends the run; a diverging run stops with one line and keeps nothing unfinished."""

import json

from lottery import experiment

from conftest import make_config, run_cli

TINY = [
    "dataset=digits",
    "model.hidden=[8]",
    "train.steps=20it",
    "train.batch_size=50",
    "train.eval_every=20it",
    "pruning.fraction=0.5",
    "progress=false",
    "branches=[]",
]


def test_layer_collapse_warns_and_pruning_nothing_more_ends_the_run(tmp_path, capsys):
    store, rows = experiment.run(make_config([*TINY, "pruning.levels=40"], tmp_path))
    out, err = capsys.readouterr()
    summaries = {
        s["level"]: s
        for s in (json.loads(f.read_text()) for f in store.path.rglob("level_*/summary.json"))
    }
    collapsed = [level for level, s in summaries.items() if s["collapsed_layers"]]
    assert collapsed, "some level should empty a layer"
    first = min(collapsed)
    assert all(not summaries[level]["collapsed_layers"] for level in range(first))
    layer = summaries[first]["collapsed_layers"][0]
    assert summaries[first]["layers"][layer]["remaining"] == 0
    assert f"warning: level {first}: {layer} has no weight left (layer collapse)" in err
    # The run stopped by itself, well before level 40, with one line saying why.
    last = max(summaries)
    assert last < 40 and [r["level"] for r in rows] == list(range(last + 1))
    assert f"stopped before level {last + 1}: pruning removes no more weights" in out
    assert not list(store.path.rglob("*.partial"))


def test_a_diverging_run_stops_with_one_line_and_leaves_nothing(tmp_path):
    result = run_cli([*TINY, "optimizer.lr=nan", "results_root=out"], cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: level 0 diverged: the training loss became nan between ")
    assert "optimizer.lr=nan" in line
    assert not (tmp_path / "out").exists()
