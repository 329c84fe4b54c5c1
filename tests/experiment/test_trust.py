"""Nothing fails silently: layer collapse is a warning and a field; a level that can prune
nothing more ends the run; a diverging run stops with one line and keeps nothing unfinished."""

import json

import pytest

from lottery import experiment
from lottery.config import ConfigError

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


def summaries_of(store) -> dict[int, dict]:
    return {
        s["level"]: s
        for s in (json.loads(f.read_text()) for f in store.path.rglob("level_*/summary.json"))
    }


def test_layer_collapse_warns_and_levels_past_what_the_network_can_lose_are_refused(
    tmp_path, capsys
):
    # 592 prunable weights, half of those alive pruned per level (half rounds up): 296, 148,
    # 74, 37, 18, 9, 4, 2, 1, 0. An 11th level would prune nothing: refused before training.
    with pytest.raises(ConfigError, match=(
        r"pruning.levels=11 is more than this network can lose: level 10 leaves 0 of its 592 "
        r"prunable weights, .* set pruning.levels=10 or fewer"
    )):
        experiment.run(make_config([*TINY, "pruning.levels=11"], tmp_path))
    assert not any(tmp_path.iterdir())
    store, rows = experiment.run(make_config([*TINY, "pruning.levels=10"], tmp_path))
    _, err = capsys.readouterr()
    summaries = summaries_of(store)
    collapsed = [level for level, s in summaries.items() if s["collapsed_layers"]]
    assert collapsed, "some level should empty a layer"
    first = min(collapsed)
    assert all(not summaries[level]["collapsed_layers"] for level in range(first))
    layer = summaries[first]["collapsed_layers"][0]
    assert summaries[first]["layers"][layer]["remaining"] == 0
    assert f"warning: level {first}: {layer} has no weight left (layer collapse)" in err
    assert [r["level"] for r in rows] == list(range(11))
    assert summaries[10]["weights_remaining_pct"] == 0
    assert not list(store.path.rglob("*.partial"))


@pytest.mark.parametrize("method", [["pruning.method=oneshot"], ["pruning.method=snip"],
                                    ["pruning.scope=layerwise"]])
def test_every_method_that_counts_weights_refuses_levels_it_cannot_give(method, tmp_path):
    # Layer-wise: fc1's 512 weights last 10 levels, out's 80 only 7; one group pruned is enough.
    experiment.prepare(make_config([*TINY, *method, "pruning.levels=10"], tmp_path))
    with pytest.raises(ConfigError, match=r"set pruning.levels=10 or fewer"):
        experiment.prepare(make_config([*TINY, *method, "pruning.levels=11"], tmp_path))


def test_structured_pruning_nothing_more_ends_the_run(tmp_path, capsys):
    # Units, not weights: 8 hidden neurons, never the last one, so level 4 removes none.
    store, rows = experiment.run(
        make_config([*TINY, "pruning.method=structured", "pruning.levels=40"], tmp_path)
    )
    out, _ = capsys.readouterr()
    last = max(summaries_of(store))
    assert last < 40 and [r["level"] for r in rows] == list(range(last + 1))
    assert f"stopped before level {last + 1}: pruning removes no more weights" in out
    assert not list(store.path.rglob("*.partial"))


def test_no_validation_data_says_early_stopping_is_off(tmp_path, capsys):
    store, _ = experiment.run(
        make_config([*TINY, "pruning.levels=1", "dataset.validation_size=0"], tmp_path)
    )
    out, _ = capsys.readouterr()
    assert "note: early stopping is off (dataset.validation_size=0 holds no validation" in out
    for summary in summaries_of(store).values():
        assert summary["early_stop"] == "off: dataset.validation_size=0"
        assert summary["early_stop_iteration"] is None
    store, _ = experiment.run(make_config([*TINY, "pruning.levels=1"], tmp_path / "held_out"))
    out, _ = capsys.readouterr()
    assert "early stopping is off" not in out
    for summary in summaries_of(store).values():
        assert summary["early_stop"] == "minimum validation loss"
        assert summary["early_stop_iteration"] is not None


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_leaves_nothing(tmp_path):
    result = run_cli([*TINY, "optimizer.lr=nan", "results_root=out"], cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: level 0 diverged: the training loss became nan between ")
    assert "optimizer.lr=nan" in line
    assert not (tmp_path / "out").exists()
