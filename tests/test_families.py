"""The pruning families beside IMP: gradual (tfmot's schedule), one-shot, Zhou's criteria."""

import json

import numpy as np
import pytest

from lottery import experiment
from lottery.config import ConfigError
from lottery.pruning import count_alive, flatten, full_mask, magnitude_prune
from lottery.pruning.gradual import PolynomialDecay, keep_count
from lottery.pruning.magnitude import criterion_scores
from lottery.pruning.strategies import mask_updates
from lottery.train import UpdateMask, host_tree

from conftest import DIGITS, make_config

GRADUAL = [
    "pruning.method=gradual", "pruning.levels=1", "pruning.initial_sparsity=0.1",
    "pruning.final_sparsity=0.8", "pruning.begin_step=20it", "pruning.end_step=150it",
    "pruning.frequency=25it",
]


def tfmot_sparsity(step, s_i=0.1, s_f=0.8, begin=20, end=150, power=3):
    """tfmot's PolynomialDecay, written out as in its source (float32 tensors)."""
    f = np.float32
    p = np.clip((f(step) - f(begin)) / (f(end) - f(begin)), f(0), f(1))
    return (f(s_i) - f(s_f)) * (f(1) - p) ** f(power) + f(s_f)


def tfmot_keep(size, sparsity):
    """tfmot's ``_update_mask``: max(round(float32(size) * (1 - s)), 1), half to even."""
    return max(int(np.round(np.float32(size) * (np.float32(1) - sparsity))), 1)


def test_the_gradual_schedule_matches_tfmot_at_every_update_and_the_mask_only_grows(tmp_path):
    plan = experiment.prepare(make_config([*DIGITS, *GRADUAL], tmp_path))
    steps, update = mask_updates(
        plan.strategy, plan.strategy_settings, plan.prunable, 0, plan.total_steps
    )
    assert steps == [20, 45, 70, 95, 120, 145]  # begin + k * frequency, up to end_step
    seen = []

    def recording(run):
        mask = update(run.step, host_tree(run.state.params), host_tree(run.mask))
        seen.append((run.step, flatten(mask)))
        return mask

    trainer = experiment.Experiment(plan).trainer
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    trainer.train(run, plan.total_steps, [UpdateMask(steps, recording)])
    previous = flatten(full_mask(plan.init_params))
    for step, mask in seen:
        for path in plan.prunable:
            size = mask[path].size
            assert np.count_nonzero(mask[path]) == tfmot_keep(size, tfmot_sparsity(step))
            assert not np.any(mask[path] & ~previous[path])  # nothing comes back
        previous = mask
    final = flatten(host_tree(run.state.params))
    for path in plan.prunable:
        assert np.all(final[path][~previous[path]] == 0.0)


def test_a_gradual_run_stores_the_mask_it_ended_with(tmp_path):
    cfg = make_config([*DIGITS, *GRADUAL], tmp_path)
    store, rows = experiment.run(cfg)
    assert [r["level"] for r in rows] == [0, 1]
    summary = store.replicate(0).summary(1)
    mask = flatten(store.replicate(0).mask(1))
    plan = experiment.prepare(cfg)
    for path in plan.prunable:
        assert np.count_nonzero(mask[path]) == tfmot_keep(mask[path].size, tfmot_sparsity(145))
    assert summary["prunable_remaining"] == count_alive(store.replicate(0).mask(1), plan.prunable)


def test_polynomial_decay_holds_before_and_after_its_window():
    schedule = PolynomialDecay(0.0, 0.8, 2000, 10000, 100)
    assert schedule.sparsity(0) == 0.0 and schedule.sparsity(12000) == pytest.approx(0.8)
    assert schedule.sparsity(6000) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert schedule.update_steps(0, 12000)[:2] == [2000, 2100]
    assert schedule.update_steps(0, 12000)[-1] == 10000
    # fc1 of LeNet-300-100 at step 5000: 92,977.5 in exact arithmetic; tfmot's float32 gives
    # 92,978 where float64 would give 92,977.
    assert keep_count(235_200, schedule.sparsity(5000)) == 92_978


@pytest.mark.parametrize(
    "override, words",
    [
        ("pruning.levels=3", "pruning.levels=3"),
        ("pruning.end_step=500it", "pruning.end_step"),
        ("pruning.final_sparsity=1.2", "pruning.final_sparsity=1.2"),
    ],
)
def test_bad_gradual_settings_are_one_line(tmp_path, override, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        experiment.prepare(make_config([*DIGITS, *GRADUAL, override], tmp_path))


def test_oneshot_keeps_the_top_of_the_dense_weights_at_imps_counts(tmp_path):
    cfg = make_config([*DIGITS, "pruning.method=oneshot", "pruning.fraction=0.5"], tmp_path)
    store, _ = experiment.run(cfg)
    replicate = store.replicate(0)
    plan = experiment.prepare(cfg)
    dense = flatten(replicate.params(0)[0])
    scores = np.concatenate([np.abs(dense[p]).ravel() for p in plan.prunable])
    total = scores.size
    for level, kept in ((1, total - round(0.5 * total)), (2, None)):
        mask = flatten(replicate.mask(level))
        alive = np.concatenate([mask[p].ravel() for p in plan.prunable])
        kept = kept if kept is not None else int(alive.sum())
        assert alive.sum() == kept
        assert scores[alive].min() >= scores[~alive].max()  # the largest dense weights
    assert summary_pct(replicate, 2) == pytest.approx(25.0, abs=0.01)


def summary_pct(replicate, level):
    return json.loads((replicate.level_path(level) / "summary.json").read_text())[
        "weights_remaining_pct"
    ]


def test_zhou_criteria_rank_by_the_change_from_the_start():
    start = {"fc": {"kernel": np.array([[1.0, -3.0, 0.5, 2.0]])}}
    final = {"fc": {"kernel": np.array([[2.0, -2.5, 0.4, -2.5]])}}
    increase = criterion_scores("magnitude_increase", final, start)["fc/kernel"]
    movement = criterion_scores("movement", final, start)["fc/kernel"]
    assert increase[0].tolist() == pytest.approx([1.0, -0.5, -0.1, 0.5])
    assert movement[0].tolist() == pytest.approx([1.0, 0.5, 0.1, 4.5])
    mask = full_mask(final)
    pruned = magnitude_prune(final, mask, ["fc/kernel"], "global", 0.5, {}, {"fc/kernel": increase})
    assert pruned["fc"]["kernel"].tolist() == [[True, False, False, True]]
    with pytest.raises(ConfigError, match=r"pruning\.criterion 'bigness'"):
        criterion_scores("bigness", final, start)


def test_a_gradual_level_killed_after_its_final_mask_was_written_starts_again(tmp_path):
    """The window between writing the final mask and the summary: the rerun must train from
    the true start (the full mask), not from the final mask."""
    import shutil

    cfg = make_config([*DIGITS, *GRADUAL], tmp_path)
    store, _ = experiment.run(cfg)
    level = store.replicate(0).level_path(1)
    finished = {f.name: f.read_bytes() for f in level.iterdir() if f.suffix == ".npz"}
    partial = level.with_name("level_1.partial")
    level.rename(partial)
    for name in ("summary.json", "params.npz", "params_sparse.npz"):
        (partial / name).unlink()
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    experiment.run(cfg)
    again = {f.name: f.read_bytes() for f in level.iterdir() if f.suffix == ".npz"}
    assert again == finished
