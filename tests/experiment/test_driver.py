"""The IMP driver: rewinding (invariant 3), determinism (4), the hash (5), resuming levels."""

import json

import numpy as np
import pytest

from lottery.config import RunError
from lottery.experiment import Experiment, prepare
from lottery.experiment import run as run_experiment
from lottery.pruning import apply_mask, flatten, full_mask
from lottery.store import experiment_hash
from lottery.train import Trainer

from conftest import make_config, summaries


@pytest.mark.parametrize(
    "model",
    [
        ["model.hidden=[64,32]", "pruning.rewind_step=50it"],
        # A convolutional network trains one step per call on a CPU: fewer, shorter steps.
        ["model=resnet20", "model.width=4", "train.steps=24it", "train.eval_every=12it",
         "pruning.rewind_step=12it"],
    ],
    ids=["mlp", "resnet20_batchnorm"],
)
def test_level_one_starts_from_the_step_k_weights_under_its_mask(
    tmp_path, digits_overrides, monkeypatch, model
):
    digits = [
        o for o in digits_overrides if not o.startswith(("model.hidden", "train.eval_every"))
    ]
    overrides = [*digits, *model]
    cfg = make_config([*overrides, "pruning.levels=1"], tmp_path)
    starts = []
    original = Trainer.start

    def recording_start(self, step, params, batch_stats, mask):
        starts.append((jax_free_copy(params), jax_free_copy(batch_stats), mask, step))
        return original(self, step, params, batch_stats, mask)

    monkeypatch.setattr(Trainer, "start", recording_start)
    experiment = Experiment(prepare(cfg))
    experiment.run()  # its trainer, compiled, also makes the reference below
    replicate = experiment.replicate

    # θ_k of a separate training, by another Trainer, of the same seed for exactly k steps.
    plan = experiment.plan
    trainer = experiment.trainer
    trainer.use_data_stream(plan.data_stream(0))  # level 0's batches (the run ended on 1's)
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    k = plan.rewind_step
    reference = jax_free_copy((trainer.train(run, k).state.params, run.state.batch_stats))
    rewound, rewound_stats = experiment.dense.rewind_point(k)
    for path, value in flatten(reference[0]).items():
        np.testing.assert_array_equal(flatten(rewound)[path], value, err_msg=path)
    assert bool(rewound_stats) == ("model=resnet20" in model)
    for path, value in flatten(reference[1]).items():
        np.testing.assert_array_equal(flatten(rewound_stats)[path], value, err_msg=path)
        assert not np.array_equal(value, flatten(plan.init_batch_stats)[path]), "stats moved"

    params, batch_stats, mask, start = starts[1]
    assert start == k
    for path, value in flatten(rewound_stats).items():
        np.testing.assert_array_equal(flatten(batch_stats)[path], value, err_msg=path)
    first = next(p for p in plan.prunable)
    assert np.count_nonzero(~flatten(mask)[first]) > 0
    expected = flatten(jax_free_copy(apply_mask(rewound, mask)))
    for path, value in flatten(params).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=path)
        alive = flatten(mask)[path]
        np.testing.assert_array_equal(value[alive], flatten(rewound)[path][alive])
    for path in plan.prunable:
        assert np.all(flatten(params)[path][~flatten(mask)[path]] == 0.0)

    # The level's stored mask is the one it trained under, and its final weights obey it.
    stored_mask = flatten(replicate.mask(1))
    final, _ = replicate.params(1)
    for path in plan.prunable:
        np.testing.assert_array_equal(stored_mask[path], flatten(mask)[path])
        assert np.all(flatten(final)[path][~stored_mask[path]] == 0.0)
        alive = stored_mask[path]
        assert np.mean(flatten(final)[path][alive] != flatten(params)[path][alive]) > 0.5

    # A lost rewind point is made again by training level 0 to step k: the same bits.
    experiment.dense.rewind_file(k).unlink()
    again, again_stats = experiment.rewind_point()
    for path, value in flatten(rewound).items():
        np.testing.assert_array_equal(flatten(again)[path], value, err_msg=path)
    for path, value in flatten(rewound_stats).items():
        np.testing.assert_array_equal(flatten(again_stats)[path], value, err_msg=path)


def jax_free_copy(tree):
    import jax

    return jax.tree.map(np.array, tree)


def test_same_config_and_seed_give_identical_summaries(tmp_path, digits_overrides):
    first = make_config(digits_overrides, tmp_path / "a")
    second = make_config(digits_overrides, tmp_path / "b")
    run_experiment(first)
    run_experiment(second)
    a, b = summaries(tmp_path / "a"), summaries(tmp_path / "b")
    assert sorted(a) == [(0, 0), (0, 1), (0, 2)]
    for key in a:
        a[key].pop("timing"), b[key].pop("timing")
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True)
    other_seed = make_config([*digits_overrides, "seed=1"], tmp_path / "a")
    run_experiment(other_seed)
    c = summaries(tmp_path / "a")
    assert c[(1, 0)]["test_loss"] != c[(0, 0)]["test_loss"]


def test_finished_levels_are_read_back_not_trained(tmp_path, digits_overrides, monkeypatch):
    cfg = make_config(digits_overrides, tmp_path)
    store, rows = run_experiment(cfg)
    before = {p: p.stat().st_mtime_ns for p in store.path.rglob("*.npz")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished level was trained again")

    monkeypatch.setattr(Trainer, "train", no_training)
    _, rows_again = run_experiment(cfg)
    assert rows_again == rows
    assert {p: p.stat().st_mtime_ns for p in store.path.rglob("*.npz")} == before


def test_more_levels_extend_the_same_experiment(tmp_path, digits_overrides):
    store, rows = run_experiment(make_config(digits_overrides, tmp_path))
    more = make_config([*digits_overrides, "pruning.levels=3"], tmp_path)
    store_more, rows_more = run_experiment(more)
    assert store_more.path == store.path
    assert rows_more[:3] == rows and rows_more[3]["level"] == 3


def test_an_interrupted_level_never_looks_finished(tmp_path, digits_overrides, monkeypatch):
    cfg = make_config(digits_overrides, tmp_path)
    original = Trainer.train
    calls = []

    def dies_on_level_one(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", dies_on_level_one)
    with pytest.raises(RunError, match=r"^interrupted at level 1 step 200; run the same"):
        run_experiment(cfg)
    replicate = Experiment(prepare(cfg)).replicate
    assert replicate.is_done(0) and not replicate.is_done(1)
    assert not replicate.level_path(1).exists()
    # Pruned first: the mask is written before training, and kept for the next run.
    assert (replicate.path / "level_1.partial" / "mask.npz").is_file()
    monkeypatch.setattr(Trainer, "train", original)
    _, rows = run_experiment(cfg)
    assert [r["level"] for r in rows] == [0, 1, 2]
    assert not list(replicate.path.glob("*.partial"))


def test_hash_ignores_names_paths_display_and_levels_but_not_hyperparameters(tmp_path):
    base = experiment_hash(make_config([]))
    for same in (
        ["name=other"],
        ["seed=3"],
        ["results_root=/elsewhere"],
        ["progress=false"],
        ["pruning.levels=20"],
        ["train.eval_batch_size=64"],
        ["+experiment=mnist1d_imp"],
    ):
        assert experiment_hash(make_config(same)) == base, same
    for different in (
        ["optimizer.lr=0.02"],
        ["pruning.fraction=0.3"],
        ["train.steps=100it"],
        ["pruning.rewind_step=5it"],
        ["model.hidden=[10]"],
        ["dataset=digits"],
    ):
        assert experiment_hash(make_config(different)) != base, different
    # Paths are not hashed, the data read from them is (see test_engine.py).
    assert experiment_hash(make_config(["dataset=idx", "dataset.path=/a"])) == experiment_hash(
        make_config(["dataset=idx", "dataset.path=/b"])
    )
