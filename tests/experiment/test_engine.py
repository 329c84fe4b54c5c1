"""The engine: shared level 0, data order per level, the data in the hash, keys that do not
apply, loadable tickets, exact prune counts, the strategy registry and the mask-update hook."""

from decimal import ROUND_FLOOR, Decimal

import numpy as np
import pytest

import lottery
from lottery import experiment
from lottery.config import ConfigError
from lottery.data import fingerprint, load
from lottery.pruning import flatten, full_mask, prune_count
from lottery.train import Trainer, UpdateMask

from conftest import make_config, run_cli, summaries


def recorded_orders(monkeypatch):
    """Collect the batch order each level trains with (level -> order array)."""
    orders = {}
    original = Trainer.use_data_stream

    def recording(self, stream):
        original(self, stream)
        orders.setdefault(len(orders), np.asarray(self.feed.order))

    monkeypatch.setattr(Trainer, "use_data_stream", recording)
    return orders


@pytest.mark.parametrize("replay", [False, True])
def test_each_level_draws_its_own_data_order_unless_replayed(
    tmp_path, digits_overrides, monkeypatch, replay
):
    overrides = [*digits_overrides, f"train.replay_data_order={str(replay).lower()}"]
    orders = recorded_orders(monkeypatch)
    _, rows = experiment.run(make_config(overrides, tmp_path / "a"))
    # Trainer built (stream 0), then level 0, 1, 2 each select theirs.
    by_level = {level: orders[level + 1] for level in range(3)}
    if replay:
        assert np.array_equal(by_level[1], by_level[0])
        assert np.array_equal(by_level[2], by_level[0])
    else:
        assert not np.array_equal(by_level[1], by_level[0])
        assert not np.array_equal(by_level[2], by_level[1])
    # The same seed gives the same results either way.
    _, rows_again = experiment.run(make_config(overrides, tmp_path / "b"))
    assert rows_again == rows
    a, b = summaries(tmp_path / "a"), summaries(tmp_path / "b")
    for key in a:
        a[key].pop("timing"), b[key].pop("timing")
    assert a == b


def test_data_seed_changes_the_order_but_not_the_initialisation(tmp_path, digits_overrides):
    base = experiment.prepare(make_config(digits_overrides, tmp_path))
    other = experiment.prepare(make_config([*digits_overrides, "data_seed=7"], tmp_path))
    assert other.digest != base.digest and other.data_seed == 7
    for path, value in flatten(base.init_params).items():
        np.testing.assert_array_equal(flatten(other.init_params)[path], value)
    same = experiment.prepare(make_config([*digits_overrides, "data_seed=0"], tmp_path))
    assert same.digest == base.digest  # data_seed equal to seed is the default


def write_idx(directory, seed):
    """A small MNIST-format IDX directory (8x8 images, 10 classes) of random content."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def write(name, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in array.shape
        )
        (directory / name).write_bytes(header + array.astype(np.uint8).tobytes())

    write("train-images-idx3-ubyte", rng.integers(0, 256, (300, 8, 8)))
    write("train-labels-idx1-ubyte", rng.integers(0, 10, 300))
    write("t10k-images-idx3-ubyte", rng.integers(0, 256, (100, 8, 8)))
    write("t10k-labels-idx1-ubyte", rng.integers(0, 10, 100))
    return directory


def test_two_idx_directories_with_different_contents_hash_apart(tmp_path):
    first, second = write_idx(tmp_path / "a", 0), write_idx(tmp_path / "b", 1)
    copy = write_idx(tmp_path / "copy_of_a", 0)
    plans = {
        name: experiment.prepare(
            make_config(["dataset=idx", f"dataset.path={path}", "dataset.validation_size=50"])
        )
        for name, path in (("a", first), ("b", second), ("copy", copy))
    }
    assert plans["a"].digest != plans["b"].digest
    assert plans["a"].dense_digest != plans["b"].dense_digest
    assert plans["a"].digest == plans["copy"].digest  # the same bytes elsewhere: same results
    no_validation = load(make_config(["dataset=digits", "dataset.validation_size=0"]).dataset)
    assert len(fingerprint(no_validation)) == 16  # an empty split hashes too


@pytest.mark.parametrize(
    "override",
    [
        "optimizer.momentum=0.9",
        "model.width=8",
        "dataset.augment=true",
        "optimizer.milestones=[10it]",
    ],
)
def test_a_key_that_does_not_apply_stops_with_one_line_and_writes_nothing(
    tmp_path, override
):
    key = override.split("=")[0]
    result = run_cli([override, "results_root=out"], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_pruning_method_is_one_line(tmp_path):
    expected = r"unknown pruning\.method 'snipp'; choose one of .*magnitude.*snip"
    with pytest.raises(ConfigError, match=expected):
        experiment.prepare(make_config(["pruning.method=snipp"], tmp_path))


def test_a_loaded_ticket_reproduces_its_test_accuracy(tmp_path, digits_overrides):
    cfg = make_config(digits_overrides, tmp_path)
    store, _ = experiment.run(cfg)
    dataset = load(cfg.dataset)
    for level in (0, 2):
        ticket = lottery.load(store.path / "replicate_0" / f"level_{level}")
        logits = np.asarray(ticket.predict(dataset.test.x))
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == dataset.test.y))
        assert accuracy == pytest.approx(ticket.summary["test_accuracy"], abs=1e-9)
        for path in ticket.summary["layers"]:
            pruned = ~flatten(ticket.mask)[path]
            assert np.all(np.asarray(flatten(ticket.params)[path])[pruned] == 0.0)
        assert (np.count_nonzero(~flatten(ticket.mask)["fc1/kernel"]) > 0) == (level > 0)
    with pytest.raises(ConfigError, match="not a finished level"):
        lottery.load(store.path / "replicate_0")


def test_prune_count_is_exact_round_half_up():
    n = np.arange(100_001)
    for p in ("0.1", "0.15", "0.2", "0.35"):
        exact = [int((Decimal(p) * int(k) + Decimal("0.5")).to_integral_value(ROUND_FLOOR))
                 for k in n]
        counts = [prune_count(float(p), int(k)) for k in n]
        assert counts == exact, p
    assert prune_count(0.35, 10) == 4 and prune_count(0.15, 10) == 2  # the halves round up


def test_a_mask_update_hook_prunes_during_training(tmp_path, digits_overrides):
    plan = experiment.prepare(make_config(digits_overrides, tmp_path))
    trainer = experiment.Experiment(plan).trainer
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    calls = []

    def halve_fc1(run, trainer):
        calls.append(run.step)
        mask = {k: dict(v) for k, v in run.mask.items()}
        kernel = np.asarray(mask["fc1"]["kernel"]).copy()
        kernel[: kernel.shape[0] // 2] = False
        mask["fc1"]["kernel"] = kernel
        return mask

    trainer.train(run, 100, [UpdateMask([50], halve_fc1)])
    assert calls == [50]
    kernel = np.asarray(run.state.params["fc1"]["kernel"])
    assert np.all(kernel[: kernel.shape[0] // 2] == 0.0)
    assert np.count_nonzero(kernel[kernel.shape[0] // 2 :]) == kernel[kernel.shape[0] // 2 :].size


@pytest.mark.slow
def test_a_sweep_over_pruning_settings_trains_level_0_once(tmp_path, digits_overrides):
    result = run_cli(
        [*digits_overrides, "pruning.fraction=0.2,0.3", "results_root=out", "-m"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    root = tmp_path / "out" / "mnist1d_imp"
    dense = [p for p in root.iterdir() if p.name.startswith("dense_")]
    experiments = [
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("dense_", "_"))
    ]
    assert len(dense) == 1 and len(experiments) == 2
    assert result.stdout.count("level  0: 100.00% weights left") == 1  # trained once
    assert result.stdout.count("level  0: reusing the dense training") == 1
    level_0 = dense[0] / "replicate_0" / "level_0"
    for folder in experiments:
        link = folder / "replicate_0" / "level_0"
        assert link.is_symlink() and link.resolve() == level_0.resolve()
        assert (folder / "curve.csv").read_text().splitlines()[1].startswith("0,0,imp,100.0,")
    curves = {f.name: (f / "curve.csv").read_text() for f in experiments}
    assert len(set(curves.values())) == 2  # the pruned levels differ


def test_methods_corrected_after_release_hash_apart_from_their_old_results():
    """GraSP, SynFlow, global Taylor and gradual changed their computation (issue 29): their
    folders are renamed, so a store made before is not read as the corrected method's;
    magnitude keeps its folder names, and level 0 stays shared by every method."""
    from lottery.config import Config, PruningConfig
    from lottery.store.hashing import dense_values, hashed_values

    def revision(**pruning) -> str | None:
        return hashed_values(Config(pruning=PruningConfig(**pruning))).get("pruning.revision")

    assert revision(method="grasp") == "grasp-2"
    assert revision(method="synflow") == "synflow-2"
    assert revision(method="gradual") == "gradual-2"
    assert revision(method="structured", criterion="taylor") == "structured-taylor-global-2"
    for unchanged in ({}, {"method": "snip"}, {"method": "structured"},
                      {"method": "structured", "criterion": "taylor", "scope": "layerwise"}):
        assert revision(**unchanged) is None, unchanged
    grasp = hashed_values(Config(pruning=PruningConfig(method="grasp")))
    assert dense_values(grasp) == dense_values(hashed_values(Config()))
