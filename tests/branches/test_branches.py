"""Branches: the controls and retraining variants of a level, trained into its folder."""

import csv
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from lottery import experiment
from lottery.branches.controls import reinitialized
from lottery.branches.instability import (
    STREAM_BLOCK,
    error_barrier,
    interpolate,
    statistics_batches,
    statistics_estimator,
)
from lottery.models import Network
from lottery.pruning import flatten
from lottery.store import digest, load_tree_npz

from conftest import make_config

# One worker for the module: its trained fixtures (a level with branches, a ResNet's
# instability both ways) are made once.
# Trains a digits experiment with every branch (module fixture): the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("branches")]

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


def test_the_default_instability_keeps_its_folder_name_and_records_its_stream(branched):
    """batchnorm=interpolate (the default) hashes the arguments it always had, so branch
    folders made before the setting existed are found again."""
    plan, store, _ = branched
    folder = branch_folders(store.replicate(0).level_path(1))["instability"]
    old_args = {"data_seed": 0, "points": 30}
    values = {"experiment": plan.digest, "branch": "instability", **old_args}
    assert folder.name == f"branch_instability_{digest(values)}"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["branch_args"] == old_args
    assert "batchnorm" not in summary["instability"]  # an MLP has no statistics
    assert summary["data_stream"] == plan.data_stream(1)  # data_seed 0: the level's own


class TinyBatchNormNet(nn.Module):
    """Dense, BatchNorm, ReLU, Dense, BatchNorm, Dense: small enough to compute by hand."""

    momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train):
        for width in (5, 4):
            x = nn.Dense(width)(x)
            x = nn.BatchNorm(not train, momentum=self.momentum, epsilon=1e-5)(x)
            x = nn.relu(x)
        return nn.Dense(3)(x)


def hand_statistics(params, batches, epsilon=1e-5):
    """Each BatchNorm's statistics as the average over the batches of the batch's own mean
    and (biased) variance, in float64, each batch normalised by its own statistics."""
    per_batch = []
    for x in batches:
        h, stats = np.asarray(x, np.float64), {}
        for dense, norm in (("Dense_0", "BatchNorm_0"), ("Dense_1", "BatchNorm_1")):
            h = h @ params[dense]["kernel"] + params[dense]["bias"]
            mean, var = h.mean(axis=0), h.var(axis=0)
            stats[norm] = {"mean": mean, "var": var}
            h = (h - mean) / np.sqrt(var + epsilon) * params[norm]["scale"]
            h = np.maximum(h + params[norm]["bias"], 0.0)
        per_batch.append(stats)
    return jax.tree.map(lambda *values: np.mean(values, axis=0), *per_batch)


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_recomputed_statistics_are_the_average_of_each_batchs_own(momentum):
    network = Network(TinyBatchNormNet(momentum), (6,))
    params, stats = network.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    # Scales and shifts away from 1 and 0, so the second layer's statistics depend on them.
    params = jax.tree.map(lambda p: np.asarray(p) + rng.normal(0, 0.5, p.shape), params)
    params = jax.tree.map(lambda p: p.astype(np.float32), params)
    batches = [rng.normal(1.0, 2.0, (16, 6)).astype(np.float32) for _ in range(3)]
    estimate = statistics_estimator(network)(params, stats, batches)
    expected = hand_statistics(params, batches)
    for path, value in flatten(expected).items():
        np.testing.assert_allclose(flatten(estimate)[path], value, rtol=2e-6, err_msg=path)
    # Not the running average the layers keep, nor one batch's values.
    _, running = network.apply(params, stats, batches[-1], train=True)
    assert not np.allclose(running["BatchNorm_1"]["var"], expected["BatchNorm_1"]["var"])
    last = hand_statistics(params, batches[-1:])
    assert not np.allclose(last["BatchNorm_1"]["mean"], expected["BatchNorm_1"]["mean"])


@pytest.fixture(scope="module")
def batchnorm_instability(tmp_path_factory):
    """A ResNet-20 (width 4) on digits, one level, instability measured both ways."""
    root = tmp_path_factory.mktemp("instability_batchnorm")
    overrides = [
        "dataset=digits", "model=resnet20", "model.width=4", "train.steps=24it",
        "train.batch_size=50", "train.eval_every=12it", "pruning.levels=1", "progress=false",
        "branches=[instability]", "branch.instability.batchnorm=both",
        "branch.instability.points=3", "branch.instability.recompute_batches=3it",
    ]
    cfg = make_config(overrides, root)
    store, _ = experiment.run(cfg)
    level = store.replicate(0).level_path(1)
    folder = branch_folders(level)["instability"]
    return experiment.prepare(cfg), level, folder


def test_both_batchnorm_settings_give_their_own_barrier(batchnorm_instability):
    _, _, folder = batchnorm_instability
    summary = json.loads((folder / "summary.json").read_text())
    line = summary["instability"]
    assert line["batchnorm"] == "both" and line["recompute_batches"] == 3
    interpolated, recomputed = line["test_errors"], line["test_errors_recompute"]
    assert len(interpolated) == len(recomputed) == 3
    assert summary["instability_barrier"] == error_barrier(interpolated)
    assert summary["instability_barrier_recompute"] == error_barrier(recomputed)
    _, level, _ = batchnorm_instability
    with open(level.parent.parent / "curve.csv") as curve:  # both barriers in the curve
        (row,) = [r for r in csv.DictReader(curve) if r["branch"] == "instability"]
    assert float(row["instability_barrier"]) == summary["instability_barrier"]
    assert float(row["instability_barrier_recompute"]) == summary["instability_barrier_recompute"]
    assert interpolated != recomputed
    assert summary["branch_args"] == {
        "data_seed": 1, "points": 3, "batchnorm": "both", "recompute_batches": 3
    }


def test_recompute_evaluates_each_point_with_statistics_of_the_fixed_batches(
    batchnorm_instability,
):
    plan, level, folder = batchnorm_instability
    summary = json.loads((folder / "summary.json").read_text())
    ends = [load_tree_npz(f / "params.npz") for f in (level, folder)]
    params = interpolate(ends[0]["params"], ends[1]["params"], 0.5)
    stats = interpolate(ends[0]["batch_stats"], ends[1]["batch_stats"], 0.5)
    batches = statistics_batches(plan, 3)
    first, again = list(batches()), list(batches())  # the same batches every time
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    recomputed = statistics_estimator(plan.network)(params, stats, first)
    trainer = experiment.Experiment(plan).trainer
    error = 1.0 - trainer.evaluate(params, recomputed)["test/accuracy"]
    assert error == summary["instability"]["test_errors_recompute"][1]
    interpolated = 1.0 - trainer.evaluate(params, stats)["test/accuracy"]
    assert interpolated == summary["instability"]["test_errors"][1]


def test_the_second_copy_records_the_data_stream_it_trained_on(batchnorm_instability):
    _, level, folder = batchnorm_instability
    copy = json.loads((folder / "summary.json").read_text())
    own = json.loads((level / "summary.json").read_text())
    assert own["data_stream"] == 1 and copy["data_stream"] == STREAM_BLOCK * 1 + 1


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
