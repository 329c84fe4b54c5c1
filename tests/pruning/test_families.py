"""The pruning families beside IMP: gradual (tfmot's schedule), one-shot, Zhou's criteria."""

import json

import numpy as np
import pytest

from lottery import experiment
from lottery.config import ConfigError
from lottery.experiment.trainers import training_inputs
from lottery.pruning import count_alive, flatten, full_mask, magnitude_prune
from lottery.pruning.gradual import PolynomialDecay, gradual_mask, keep_count
from lottery.pruning.magnitude import criterion_scores
from lottery.pruning.strategies import mask_updates
from lottery.train import UpdateMask, host_tree

from conftest import DIGITS, make_config

GRADUAL = [
    "pruning.method=gradual", "pruning.levels=1", "pruning.initial_sparsity=0.1",
    "pruning.final_sparsity=0.8", "pruning.begin_step=20it", "pruning.end_step=150it",
    "pruning.frequency=25it",
]


def tfmot_sparsity(step, s_i=0.1, s_f=0.8, begin=20, end=150):
    """tfmot's PolynomialDecay (power 3) by hand, as Keras' ``fit`` runs it on a CPU: float32
    tensors, where TensorFlow's graph optimiser turns ``/ (end - begin)`` into a product with
    the float32 reciprocal and ``(s_i - s_f) * pow(x, 3)`` into ``((s_i - s_f) * x) * (x * x)``
    (checked against TensorFlow 2.x: equal bit for bit at every step of the preset's schedule)."""
    f = np.float32
    p = min(f(1), max(f(0), f(step - begin) * (f(1) / f(end - begin))))
    x = f(1) - p
    return (f(s_i - s_f) * x) * (x * x) + f(s_f)


def tfmot_keep(size, sparsity):
    """tfmot's ``_update_mask``: k = max(round(float32(size) * (1 - s)), 1), half to even."""
    return max(int(np.round(np.float32(size) * (np.float32(1) - sparsity))), 1)


def tfmot_pruning_steps(begin=20, end=150, frequency=25):
    """tfmot's ``_should_prune_in_step`` over its pruning steps, which start at 1: the
    wrapper adds 1 to the step (0 when training begins) before the first mask update."""
    return [t for t in range(1, end + 1) if t >= begin and (t - begin) % frequency == 0]


def tfmot_mask(weights, sparsity):
    """tfmot's ``_update_mask``: every weight with |w| >= the k-th largest |w| (``top_k``)."""
    magnitudes = np.abs(weights)
    k = tfmot_keep(magnitudes.size, sparsity)
    threshold = np.sort(magnitudes.reshape(-1))[::-1][k - 1]
    assert threshold > 0  # (else tfmot would keep the pruned zeros too)
    return magnitudes >= threshold


@pytest.mark.parametrize("begin", [20, 0])
def test_gradual_masks_replay_tfmot_at_every_update_on_the_recorded_weights(tmp_path, begin):
    """tfmot's mask of pruning step t is made from the weights after t - 1 gradient steps, at
    its steps only (never before training when begin_step=0), by its count and tie rule."""
    overrides = [*DIGITS, *GRADUAL, f"pruning.begin_step={begin}it"]
    plan = experiment.prepare(make_config(overrides, tmp_path))
    steps, update = mask_updates(
        plan.strategy, plan.strategy_settings, plan.prunable, 0, plan.total_steps
    )
    seen = []

    def recording(run, trainer):
        params, before = flatten(host_tree(run.state.params)), flatten(host_tree(run.mask))
        mask = update(training_inputs(run, trainer))
        seen.append((run.step, params, before, flatten(mask)))
        return mask

    trainer = experiment.Experiment(plan).trainer
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    trainer.train(run, plan.total_steps, [UpdateMask(steps, recording)])
    tfmot_steps = tfmot_pruning_steps(begin)
    assert [step for step, *_ in seen] == [t - 1 for t in tfmot_steps]
    for step, params, before, mask in seen:
        sparsity = tfmot_sparsity(step + 1, begin=begin)
        for path in plan.prunable:
            assert np.array_equal(mask[path], tfmot_mask(params[path], sparsity)), (step, path)
            assert not np.any(mask[path] & ~before[path])  # nothing comes back
    final = flatten(host_tree(run.state.params))
    for path in plan.prunable:
        assert np.all(final[path][~seen[-1][3][path]] == 0.0)


def test_gradual_keeps_every_weight_tied_at_tfmots_threshold_and_never_revives():
    kernel = np.array([[0.5, -0.2, 0.2, 0.0, 0.2, 0.1, 0.9, 0.3]], np.float32)
    mask = {"fc": {"kernel": np.array([[1, 1, 1, 0, 1, 1, 1, 1]], bool)}}
    # k = round(8 * 0.5) = 4; the 4th largest |w| is 0.2, which three weights share: all stay.
    pruned = gradual_mask({"fc": {"kernel": kernel}}, mask, ["fc/kernel"], 0.5)
    assert pruned["fc"]["kernel"].astype(int).tolist() == [[1, 1, 1, 0, 1, 0, 1, 1]]
    # The pruned weight (0.0 here, as after every step) stays pruned even below the count.
    kept = gradual_mask({"fc": {"kernel": kernel}}, mask, ["fc/kernel"], 0.0)
    assert kept["fc"]["kernel"].astype(int).tolist() == [[1, 1, 1, 0, 1, 1, 1, 1]]


@pytest.mark.slow
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
    # tfmot's step t is made after t - 1 gradient steps.
    assert schedule.update_steps(0, 12000)[:2] == [1999, 2099]
    assert schedule.update_steps(0, 12000)[-1] == 9999
    assert PolynomialDecay(0.5, 0.8, 0, 1000, 100).update_steps(0, 2000)[:2] == [99, 199]
    # fc1 of LeNet-300-100 at step 5000: 92,977.5 in exact arithmetic; tfmot's float32 gives
    # 92,978 where float64 would give 92,977.
    assert keep_count(235_200, schedule.sparsity(5000)) == 92_978
    # Keras' graph (TensorFlow 2.x, CPU) against eager tfmot's division and powf, which give
    # 215,602 and 27,010: the counts of fc1 at step 2288 and fc2 at step 2347.
    assert keep_count(235_200, schedule.sparsity(2288)) == 215_601
    assert keep_count(30_000, schedule.sparsity(2347)) == 27_011


@pytest.mark.parametrize(
    "override, words",
    [
        ("pruning.levels=3", "pruning.levels=3"),
        ("pruning.end_step=500it", "pruning.end_step"),
        ("pruning.final_sparsity=1.2", "pruning.final_sparsity=1.2"),
        # tfmot's update of step 20 is made after 19 steps: a rewind point at 20 would miss it
        ("pruning.rewind_step=20it", "rewind to at most 19it"),
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
