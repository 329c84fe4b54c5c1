"""The store heals (invariant 8): a corrupted finished store ends, on the next run, as the
store of a run that was never corrupted (training is a function of config and seeds, so a
level made again has the same bits), with a warning line and no traceback."""

import json
import os
import shutil
import subprocess
import time
import types

import numpy as np
import pytest

import lottery
from lottery import experiment
from lottery.analysis import load_metrics, load_results
from lottery.config import ConfigError, RunError
from lottery.train import hooks
from lottery.train.checkpoint import Checkpointer

from conftest import CONFIG_DIR, DIGITS, make_config

# Each case trains a digits experiment, damages its store and runs it again: the whole suite
# only (the store's own checks of a level's files are in the fast tier, tests/store/).
pytestmark = pytest.mark.slow

HEALABLE = [*DIGITS, "pruning.rewind_step=50it"]  # levels 0-2; the rewind point matters


def truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def rewrite_npz(path, change):
    """Replace ``path`` by a whole, readable .npz whose arrays ``change(arrays)`` edited."""
    with np.load(path) as data:
        arrays = dict(data)
    change(arrays)
    path.unlink()
    np.savez(path, **arrays)


def one_short(arrays):
    first = sorted(arrays)[0]
    arrays[first] = arrays[first][:-1]


def renamed(arrays):
    first = sorted(arrays)[0]
    arrays[first.rsplit("/", 2)[0] + "/other_layer/kernel"] = arrays.pop(first)


def as_floats(arrays):
    first = sorted(arrays)[0]
    arrays[first] = arrays[first].astype(np.float32)


def corrupt(case, experiment_dir, dense_dir):
    replicate, dense = experiment_dir / "replicate_0", dense_dir / "replicate_0"
    if case == "truncated summary.json":
        truncate(replicate / "level_1" / "summary.json")
    elif case == "missing summary.json":
        (replicate / "level_2" / "summary.json").unlink()
    elif case == "garbage params.npz":
        (replicate / "level_1" / "params.npz").write_bytes(os.urandom(5000))
    elif case == "truncated params.npz of the last level":
        truncate(replicate / "level_2" / "params.npz")
    elif case == "truncated mask.npz":
        truncate(replicate / "level_2" / "mask.npz")
    elif case == "truncated rewind point":
        truncate(dense / "rewind_50it.npz")
    elif case == "missing rewind point":
        (dense / "rewind_50it.npz").unlink()
    elif case == "stale temp files":
        for folder in (replicate, replicate / "level_1", dense):
            stale = folder / ".params.npz.abc123.tmp"
            stale.write_bytes(b"half a file")
            os.utime(stale, (time.time() - 3600, time.time() - 3600))
    elif case == "dense level 0 deleted":
        for file in (dense / "level_0").iterdir():
            file.unlink()
        (dense / "level_0").rmdir()
    elif case == "truncated config.yaml":
        (experiment_dir / "config.yaml").write_text("name: [unclosed")
    elif case == "garbled level 0 summary":
        (dense / "level_0" / "summary.json").write_text("{not json")
    elif case == "level folder replaced by a file":
        folder = replicate / "level_2"
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
        folder.write_text("")
    elif case == "unfinished level with a truncated mask":
        (replicate / "level_3.partial").mkdir()
        (replicate / "level_3.partial" / "mask.npz").write_bytes(b"PK\x03\x04trunc")
    elif case == "summary.json without its keys":
        (replicate / "level_2" / "summary.json").write_text('{"level": 2}')
    elif case == "summary.json not UTF-8":
        (replicate / "level_1" / "summary.json").write_bytes(b"\xff\xfe{" + bytes(range(128, 256)))
    elif case == "mask.npz of the wrong shape":
        rewrite_npz(replicate / "level_2" / "mask.npz", one_short)
    elif case == "mask.npz of another network's layers":
        rewrite_npz(replicate / "level_1" / "mask.npz", renamed)
    elif case == "mask.npz of floats":
        rewrite_npz(replicate / "level_2" / "mask.npz", as_floats)
    elif case == "params.npz of the wrong shape":
        rewrite_npz(replicate / "level_2" / "params.npz", one_short)
    elif case == "unfinished level with a mask of the wrong shape":
        (replicate / "level_3.partial").mkdir()
        shutil.copy(replicate / "level_2" / "mask.npz", replicate / "level_3.partial")
        rewrite_npz(replicate / "level_3.partial" / "mask.npz", one_short)
    elif case == "store lock replaced by a folder":
        (replicate / ".lock").unlink()
        (replicate / ".lock").mkdir()
    elif case == "unfinished level whose checkpoints folder is a file":
        (replicate / "level_3.partial").mkdir()
        (replicate / "level_3.partial" / "checkpoints").write_text("not a folder")
    else:
        raise AssertionError(case)


CASES = [
    "truncated summary.json",
    "missing summary.json",
    "garbage params.npz",
    "truncated params.npz of the last level",
    "truncated mask.npz",
    "truncated rewind point",
    "missing rewind point",
    "stale temp files",
    "dense level 0 deleted",
    "truncated config.yaml",
    "garbled level 0 summary",
    "level folder replaced by a file",
    "unfinished level with a truncated mask",
    "summary.json without its keys",
    "summary.json not UTF-8",
    "mask.npz of the wrong shape",
    "mask.npz of another network's layers",
    "mask.npz of floats",
    "params.npz of the wrong shape",
    "unfinished level with a mask of the wrong shape",
    "store lock replaced by a folder",
    "unfinished level whose checkpoints folder is a file",
]
# Only missing, stale or unfinished: made again without a word.
QUIET = {"stale temp files", "missing rewind point", "dense level 0 deleted",
         "truncated config.yaml", "unfinished level with a truncated mask",
         "unfinished level with a mask of the wrong shape"}


def results(root):
    """What a store says: every summary (less timings) and every evaluation."""
    frame = load_results(root).drop(columns=["wall_seconds", "path"])
    return frame, load_metrics(root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    experiment.run(make_config([*HEALABLE, "pruning.levels=3"], root))
    return results(root)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-level store, copied by each case (trained once)."""
    root = tmp_path_factory.mktemp("finished")
    store, _ = experiment.run(make_config(HEALABLE, root))
    return root, store.path.relative_to(root), store.dense_path.relative_to(root)


@pytest.mark.parametrize("case", CASES)
def test_a_corrupted_store_heals_on_the_next_run(tmp_path, reference, finished, case, capsys):
    root, experiment_dir, dense_dir = finished
    shutil.copytree(root, tmp_path, symlinks=True, dirs_exist_ok=True)
    store = types.SimpleNamespace(path=tmp_path / experiment_dir)
    corrupt(case, tmp_path / experiment_dir, tmp_path / dense_dir)
    capsys.readouterr()
    experiment.run(make_config([*HEALABLE, "pruning.levels=3"], tmp_path))  # extends by one
    err = capsys.readouterr().err
    frame, metrics = results(tmp_path)
    expected_frame, expected_metrics = reference
    assert frame.drop(columns=["hash"]).equals(expected_frame.drop(columns=["hash"]))
    assert np.array_equal(
        metrics.drop(columns=["hash"]).to_numpy(dtype=str),
        expected_metrics.drop(columns=["hash"]).to_numpy(dtype=str),
    )
    assert "Traceback" not in err
    # Damage to finished results is reported; what was only missing is quietly made again.
    if case not in QUIET:
        assert err.startswith("warning: ") and ("moved it to" in err or "removed it" in err), err
        assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.rglob(".*.tmp"))
    assert not list(tmp_path.rglob("*.partial"))
    summary = json.loads((store.path / "replicate_0" / "level_3" / "summary.json").read_text())
    assert summary["level"] == 3


def test_the_report_skips_unreadable_records_with_a_warning(tmp_path, finished):
    import sys

    replicate = copy_of(finished, tmp_path / "results")
    cut_line = len((replicate / "level_1" / "metrics.jsonl").read_text().splitlines()) + 1
    with open(replicate / "level_1" / "metrics.jsonl", "a") as metrics:
        metrics.write('{"iteration": 5, "test/acc\n')  # a line cut by a kill
    truncate(replicate / "level_2" / "summary.json")
    result = subprocess.run(
        [sys.executable, "-m", "lottery.report", str(tmp_path / "results"),
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = result.stderr.strip().splitlines()
    cut = f"line {cut_line} of "
    assert any(cut in w and "level_1/metrics.jsonl" in w for w in warnings), warnings
    assert any("level_2/summary.json" in w for w in warnings), warnings
    assert all(w.startswith("warning: skipped") for w in warnings), warnings
    assert load_results(tmp_path / "results")["level"].tolist() == [0, 1]


def copy_of(finished, tmp_path):
    """A copy of the finished store under ``tmp_path``: its experiment's replicate_0."""
    root, experiment_dir, _ = finished
    shutil.copytree(root, tmp_path, symlinks=True, dirs_exist_ok=True)
    return tmp_path / experiment_dir / "replicate_0"


# -- a damaged newest checkpoint ------------------------------------------------------------

# Checkpoints at the evaluation steps (as the default time cadence stops at them): the same
# bits as the finished store, which was trained without any.
CHECKPOINTED = [*HEALABLE, "train.checkpoint_every=50it"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A store stopped (Ctrl-C) at level 2's last evaluation: level_2.partial holds the
    checkpoints of steps 100 and 150 (level 2 trains from the rewind step, 50, to 200)."""
    root = tmp_path_factory.mktemp("interrupted")
    evaluate = hooks.Evaluate.__call__

    def interrupting(self, run, trainer):
        evaluate(self, run, trainer)
        if trainer.stream == 2 and run.step == 200:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hooks.Evaluate, "__call__", interrupting)
        with pytest.raises(RunError, match="interrupted at level 2"):
            experiment.run(make_config(CHECKPOINTED, root))
    [checkpoints] = root.rglob("level_2.partial/checkpoints")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["100", "150"]
    return root


def damage(step_folder, how):
    if how == "truncated":
        for file in step_folder.rglob("*"):
            if file.is_file() and file.stat().st_size > 0:
                truncate(file)
    elif how == "garbled meta":
        (step_folder / "meta" / "metadata").write_text('{"step": 150, "hist')
    elif how == "emptied":
        shutil.rmtree(step_folder)
        step_folder.mkdir()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "garbled meta", "emptied"])
def test_a_damaged_newest_checkpoint_is_removed_and_its_step_written_again(
    tmp_path, finished, interrupted, how, capsys
):
    shutil.copytree(interrupted, tmp_path, symlinks=True, dirs_exist_ok=True)
    [checkpoints] = tmp_path.rglob("level_2.partial/checkpoints")
    damage(checkpoints / "150", how)
    capsys.readouterr()
    experiment.run(make_config(CHECKPOINTED, tmp_path))  # once stuck: StepAlreadyExistsError
    captured = capsys.readouterr()
    [warning] = captured.err.strip().splitlines()
    assert warning.startswith("warning: checkpoint ") and "/150 is unreadable" in warning
    assert "level 2: resuming from step 100" in captured.out
    frame, metrics = results(tmp_path)
    expected_frame, expected_metrics = results(finished[0])
    assert frame.equals(expected_frame)
    assert metrics.equals(expected_metrics)
    assert not list(tmp_path.rglob("*.partial"))


# -- the report and lottery.load ------------------------------------------------------------


def test_the_report_skips_garbled_bytes_with_one_warning(tmp_path, finished, capsys):
    from lottery import report

    replicate = copy_of(finished, tmp_path / "results")
    metrics = replicate / "level_1" / "metrics.jsonl"
    evaluations = len(metrics.read_text().splitlines())
    with open(metrics, "ab") as file:
        file.write(b"\xff\xfe\x00garbled\n" + bytes(range(128, 256)) + b"\n")  # not UTF-8
    capsys.readouterr()
    assert report.main([str(tmp_path / "results"), "--out", str(tmp_path / "report")]) == 0
    [warning] = capsys.readouterr().err.strip().splitlines()
    expected = f"lines {evaluations + 1}-{evaluations + 2} of {metrics}"
    assert warning.startswith("warning: skipped ") and expected in warning, warning
    rows = load_metrics(tmp_path / "results")
    assert (rows["level"] == 1).sum() == evaluations  # the records before are kept


@pytest.mark.parametrize(
    "file, change",
    [("mask.npz", one_short), ("mask.npz", renamed), ("mask.npz", as_floats),
     ("params.npz", one_short), ("params.npz", truncate)],
)
def test_lottery_load_refuses_a_level_that_does_not_fit_the_network(
    tmp_path, finished, file, change
):
    level = copy_of(finished, tmp_path) / "level_2"
    assert lottery.load(level).summary["level"] == 2  # whole, it loads
    if change is truncate:
        truncate(level / file)
    else:
        rewrite_npz(level / file, change)
    with pytest.raises(ConfigError) as caught:
        lottery.load(level)
    message = str(caught.value)
    assert message.startswith(f"{level} is damaged ({file}") and "\n" not in message, message
    assert "run its experiment again" in message


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs root; the test is skipped where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk, leave=0):
    """Fill ``disk`` until it is full, then free ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "ab") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))


# Orbax's writes on a full disk would each print a traceback ("Event loop is closed" among
# them, which pytest reports as unraisable).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_at_a_checkpoint_is_the_one_full_disk_line(
    small_disk, finished, monkeypatch
):
    save = Checkpointer.save

    def filling_then_saving(self, run):
        # Room for Orbax's small files, not for its arrays: begun, the write would fail with
        # tensorstore's RESOURCE_EXHAUSTED (a ValueError), not an OSError.
        fill(small_disk, leave=20_000)
        save(self, run)

    monkeypatch.setattr(Checkpointer, "save", filling_then_saving)
    cfg = make_config(CHECKPOINTED, small_disk / "results")
    with pytest.raises(RunError) as caught:
        experiment.run(cfg)
    message = str(caught.value)
    assert message.startswith("the disk is full (writing ") and "\n" not in message, message
    assert "checkpoints" in message and "finished levels are intact" in message
    monkeypatch.undo()
    (small_disk / "filler").unlink()
    experiment.run(cfg)  # space freed, the same command ends as if it had never run out
    assert results(small_disk / "results")[0].equals(results(finished[0])[0])


def test_tensorstore_running_out_of_disk_is_a_full_disk(small_disk):
    """The disk filling while Orbax writes: tensorstore's error is the full-disk OSError."""
    import tensorstore

    from lottery.train.checkpoint import is_disk_full

    fill(small_disk, leave=4096)
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(small_disk / "a")}}
    with pytest.raises(ValueError, match="RESOURCE_EXHAUSTED") as caught:
        array = tensorstore.open(spec, create=True, dtype="float32", shape=[100_000]).result()
        array.write(np.ones(100_000, np.float32)).result()
    assert is_disk_full(caught.value)
    assert not is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))


def compose_config(overrides, results_root):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"results_root={results_root}"])


def test_a_full_disk_at_the_final_plot_is_the_one_full_disk_line(
    small_disk, monkeypatch, capsys
):
    from lottery import analysis, cli

    draw = analysis.plot_sparsity_accuracy

    def filling_then_drawing(*args, **kwargs):
        fill(small_disk)
        return draw(*args, **kwargs)

    monkeypatch.setattr(analysis, "plot_sparsity_accuracy", filling_then_drawing)
    capsys.readouterr()
    assert cli.run(compose_config(HEALABLE, small_disk / "results")) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: the disk is full (writing ") and "sparsity_accuracy.png" in line
    assert "every level is finished" in line
    assert load_results(small_disk / "results")["level"].tolist() == [0, 1, 2]
    assert not list(small_disk.rglob(".*.tmp"))


def test_a_full_disk_under_the_report_is_the_one_full_disk_line(
    tmp_path, small_disk, finished, capsys
):
    from lottery import report

    copy_of(finished, tmp_path / "results")
    fill(small_disk)
    capsys.readouterr()
    assert report.main([str(tmp_path / "results"), "--out", str(small_disk / "report")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: the disk is full (writing under {small_disk / 'report'})")
    assert not list(small_disk.rglob(".*.tmp"))
