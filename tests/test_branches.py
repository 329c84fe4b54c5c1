"""Branches: the controls and retraining variants of a level, trained into its folder."""

import json

import jax
import numpy as np
import pytest

from lottery import experiment
from lottery.branches.controls import reinitialized
from lottery.branches.instability import error_barrier, interpolate
from lottery.pruning import flatten
from lottery.store import load_tree_npz

from conftest import make_config

ALL = "branches=[random_reinit,random_prune,lr_rewind,finetune,rewind_to,instability]"


def branch_folders(level_folder):
    return {
        json.loads((f / "summary.json").read_text())["branch"]: f
        for f in level_folder.glob("branch_*")
        if (f / "summary.json").is_file()
    }


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    """One digits experiment, one level, every branch (the identical-copy instability)."""
    root = tmp_path_factory.mktemp("branches")
    overrides = [
        "dataset=digits", "model.hidden=[64,32]", "train.steps=200it", "train.batch_size=50",
        "train.eval_every=50it", "pruning.levels=1", "progress=false", ALL,
        "branch.rewind_to.steps=[0it,50it]", "branch.instability.data_seed=0",
        "optimizer.schedule=cosine",
    ]
    cfg = make_config(overrides, root)
    plan = experiment.prepare(cfg)
    store, rows = experiment.run(cfg)
    return plan, store, rows


def test_every_branch_is_a_row_and_a_folder(branched):
    _, store, rows = branched
    level = store.replicate(0).level_path(1)
    folders = branch_folders(level)
    expected = {"random_reinit", "random_prune", "lr_rewind", "finetune", "rewind_to_0it",
                "rewind_to_50it", "instability"}
    assert set(folders) == expected
    assert {r["branch"] for r in rows if r["level"] == 1} == expected | {"imp"}
    assert all(f.name.startswith(f"branch_{name}_") for name, f in folders.items())


def test_random_prune_keeps_per_layer_counts_and_differs_from_the_ticket(branched):
    plan, store, _ = branched
    level = store.replicate(0).level_path(1)
    ticket = flatten(load_tree_npz(level / "mask.npz")["mask"])
    control = flatten(load_tree_npz(branch_folders(level)["random_prune"] / "mask.npz")["mask"])
    for path in plan.prunable:
        assert np.count_nonzero(control[path]) == np.count_nonzero(ticket[path])
        assert not np.array_equal(control[path], ticket[path])
    params = flatten(load_tree_npz(branch_folders(level)["random_prune"] / "params.npz")["params"])
    for path in plan.prunable:
        assert np.all(params[path][~control[path]] == 0.0)


def test_random_reinit_keeps_the_mask_and_changes_every_surviving_weight(branched):
    plan, store, _ = branched
    level = store.replicate(0).level_path(1)
    folder = branch_folders(level)["random_reinit"]
    ticket = flatten(load_tree_npz(level / "mask.npz")["mask"])
    control = flatten(load_tree_npz(folder / "mask.npz")["mask"])
    assert all(np.array_equal(control[p], ticket[p]) for p in ticket)
    fresh = flatten(reinitialized(plan.network, (0, 1), 0)[0])
    original = flatten(plan.init_params)
    for path in plan.prunable:
        alive = ticket[path]
        assert np.all(np.asarray(fresh[path])[alive] != original[path][alive])


def test_rewinding_to_the_levels_own_step_repeats_the_level_bit_for_bit(branched):
    _, store, _ = branched
    level = store.replicate(0).level_path(1)
    same = load_tree_npz(branch_folders(level)["rewind_to_0it"] / "params.npz")["params"]
    ticket = load_tree_npz(level / "params.npz")["params"]
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(ticket), strict=True):
        assert np.array_equal(a, b)
    other = load_tree_npz(branch_folders(level)["rewind_to_50it"] / "params.npz")["params"]
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(ticket), strict=True)
    )


def test_lr_rewind_and_finetune_start_from_the_pruned_trained_weights(branched):
    plan, store, _ = branched
    replicate = store.replicate(0)
    folders = branch_folders(replicate.level_path(1))
    trainer = experiment.Experiment(plan).trainer
    params, stats = replicate.params(0)
    mask = replicate.mask(1)
    pruned = trainer.evaluate(
        jax.tree.map(lambda p, m: np.where(m, p, 0.0), params, mask), stats
    )
    for name, first_step in (("lr_rewind", 0), ("finetune", 0)):
        lines = (folders[name] / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert records[0]["iteration"] == first_step
        assert records[0]["test/accuracy"] == pruned["test/accuracy"]
    summary = json.loads((folders["finetune"] / "summary.json").read_text())
    final_lr = float(trainer.schedule(plan.total_steps - 1))
    assert summary["branch_args"]["lr"] == pytest.approx(final_lr) and final_lr < 1e-4
    lr_rewind = json.loads((folders["lr_rewind"] / "summary.json").read_text())
    assert lr_rewind["test_accuracy"] != summary["test_accuracy"]  # a different schedule


def test_the_instability_of_two_identical_copies_is_zero(branched):
    _, store, _ = branched
    folder = branch_folders(store.replicate(0).level_path(1))["instability"]
    summary = json.loads((folder / "summary.json").read_text())
    errors = summary["instability"]["test_errors"]
    assert len(errors) == 30 and summary["instability_barrier"] == 0.0
    assert len(set(errors)) == 1


def test_the_error_barrier_is_the_bump_over_the_ends():
    assert error_barrier([0.1, 0.3, 0.2]) == pytest.approx(0.15)
    assert error_barrier([0.2, 0.1, 0.2]) == pytest.approx(0.0)
    a, b = {"w": np.array([0.0, 2.0])}, {"w": np.array([0.0, 4.0])}
    assert interpolate(a, b, 0.25)["w"].tolist() == [0.0, 2.5]


def test_finished_branches_are_not_trained_again(branched, capsys):
    plan, store, _ = branched
    level = store.replicate(0).level_path(1)
    before = {n: (f / "summary.json").stat().st_mtime_ns for n, f in branch_folders(level).items()}
    experiment.run(plan.cfg)
    after = {n: (f / "summary.json").stat().st_mtime_ns for n, f in branch_folders(level).items()}
    assert before == after
    assert "random_reinit:" not in capsys.readouterr().out


def test_a_global_random_mask_keeps_the_total_count_only():
    from lottery.pruning.random_masks import random_mask_like

    mask = {
        "a": {"kernel": np.array([True] * 90 + [False] * 10)},
        "b": {"kernel": np.array([True] * 10 + [False] * 90), "bias": np.array([1, 0, 0], bool)},
    }
    rng = np.random.default_rng(0)
    both = random_mask_like(mask, ["a/kernel", "b/kernel"], "global", rng)
    alive = [int(both[k]["kernel"].sum()) for k in ("a", "b")]
    assert sum(alive) == 100 and alive != [90, 10]  # spread at random over both layers
    assert both["b"]["bias"].all()  # a structured ticket's masked biases come back
    layerwise = random_mask_like(mask, ["a/kernel", "b/kernel"], "layerwise", rng)
    assert [int(layerwise[k]["kernel"].sum()) for k in ("a", "b")] == [90, 10]


def test_a_remade_rewind_point_equals_the_one_level_0_saved(tmp_path):
    """rewind_to k makes θ_k again by training level 0 to k, stopping where level 0 stopped
    (its evaluations and its own rewind step): the same bits as saving it in level 0."""
    common = [
        "dataset=digits", "model.hidden=[64,32]", "train.steps=120it", "train.batch_size=50",
        "train.eval_every=80it", "pruning.levels=1", "progress=false",
    ]
    remade = make_config(
        [*common, "pruning.rewind_step=30it", "branches=[rewind_to]",
         "branch.rewind_to.steps=[100it]"], tmp_path / "a")
    saved = make_config([*common, "pruning.rewind_step=100it", "branches=[]"], tmp_path / "b")
    files = []
    for cfg in (remade, saved):
        store, _ = experiment.run(cfg)
        files.append(store.dense_replicate(0).rewind_file(100))
    a, b = (load_tree_npz(f) for f in files)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.array_equal(x, y)
