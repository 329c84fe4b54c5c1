"""The store heals (invariant 8): a corrupted finished store ends, on the next run, as the
store of a run that was never corrupted (training is a function of config and seeds, so a
level made again has the same bits), with a warning line and no traceback."""

import json
import os
import shutil
import time
import types

import numpy as np
import pytest

from lottery import experiment
from lottery.analysis import load_metrics, load_results

from conftest import DIGITS, make_config

HEALABLE = [*DIGITS, "pruning.rewind_step=50it"]  # levels 0-2; the rewind point matters


def truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


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
]


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
    if case not in {"stale temp files", "missing rewind point", "dense level 0 deleted",
                    "truncated config.yaml", "unfinished level with a truncated mask"}:
        assert err.startswith("warning: ") and "moved it to" in err, err
    assert not list(tmp_path.rglob(".*.tmp"))
    assert not list(tmp_path.rglob("*.partial"))
    summary = json.loads((store.path / "replicate_0" / "level_3" / "summary.json").read_text())
    assert summary["level"] == 3


def test_the_report_skips_unreadable_records_with_a_warning(tmp_path):
    import subprocess
    import sys

    store, _ = experiment.run(make_config(DIGITS, tmp_path / "results"))
    replicate = store.path / "replicate_0"
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
    assert any("line 6" in w and "level_1/metrics.jsonl" in w for w in warnings), warnings
    assert any("level_2/summary.json" in w for w in warnings), warnings
    assert all(w.startswith("warning: skipped") for w in warnings), warnings
    assert load_results(tmp_path / "results")["level"].tolist() == [0, 1]
