"""W&B logging: offline runs hold what the local store holds; a failing W&B never stops a run.

W&B cannot reach its server here, so runs are offline and read back from their transaction
log (``run-<id>.wandb``) with :mod:`lottery.logging.wandb_file`.
"""

import json
import os
from dataclasses import asdict

import pytest
import wandb

from lottery import imp
from lottery.logging.wandb_file import iter_payloads, read_run
from lottery.store import CURVE_COLUMNS

from conftest import DIGITS, make_config, summaries


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """No W&B settings from the machine; W&B's own config and caches in the test folder."""
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            monkeypatch.delenv(name)
    for name in ("CONFIG", "CACHE", "DATA", "ARTIFACT"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / f"wandb-{name.lower()}"))


def local_metrics(replicate_dir):
    """(level, iteration) → the metrics.jsonl record, for every finished level."""
    found = {}
    for file in sorted(replicate_dir.glob("level_*/metrics.jsonl")):
        level = int(file.parent.name.removeprefix("level_"))
        for line in file.read_text().splitlines():
            record = json.loads(line)
            found[(level, record["iteration"])] = record
    return found


def wandb_files(root):
    return sorted((root / "wandb").glob("offline-run-*/run-*.wandb"))


def test_offline_run_holds_the_store_metrics_config_and_curve(tmp_path, capsys):
    root = tmp_path / "results"
    cfg = make_config([*DIGITS, "logger=wandb"], root)
    store, rows = imp.run(cfg)
    digest = store.path.name
    assert f"wandb sync {root / 'wandb'}" in capsys.readouterr().out

    [file] = wandb_files(root)
    run = read_run(file)
    assert run.run_id == f"{digest}-r0"
    assert run.project == "lottery"
    assert run.group == f"{cfg.name}/{digest}"
    assert run.name == f"{cfg.name}-{digest}-r0"
    assert run.exit_code == 0
    logged = {k: v for k, v in run.config.items() if k != "_wandb"}
    assert logged == {**json.loads(json.dumps(asdict(cfg))), "hash": digest}

    # Every evaluation, at every level, with the values of metrics.jsonl exactly.
    local = local_metrics(store.replicate(0).path)
    evals = {(row["level"], row["iteration"]): row for row in run.rows_with("test/accuracy")}
    assert set(evals) == set(local)
    assert len(local) == 3 * 5  # levels 0-2, iterations 0, 50, ..., 200
    for key, record in local.items():
        for metric, value in record.items():
            assert evals[key][metric] == value, (key, metric)
        assert ("train/loss" in evals[key]) == (key[1] > 0)
    stored = summaries(root)
    for (level, _), row in evals.items():
        assert row["prune/weights_remaining"] == stored[(0, level)]["weights_remaining_pct"]

    # One row per finished level, and the curve as a table and a plot at the end.
    per_level = {row["level"]: row for row in run.rows_with("curve/test_accuracy")}
    assert sorted(per_level) == [0, 1, 2]
    for level, row in per_level.items():
        summary = stored[(0, level)]
        assert row["curve/test_accuracy"] == summary["test_accuracy"]
        assert row["curve/early_stop_iteration"] == summary["early_stop_iteration"]
        assert row["prune/weights_remaining"] == summary["weights_remaining_pct"]
    assert run.summary["curve/table"]["nrows"] == len(rows) == 3
    assert run.summary["curve/table"]["ncols"] == len(CURVE_COLUMNS) == 8
    assert "curve/sparsity_accuracy" in run.config["_wandb"]["visualize"]
    assert any(f.startswith("media/table/curve/table") for f in run.files)
    steps = {m.get("name") or m.get("glob_name"): m.get("step_metric") for m in run.metrics}
    assert steps["iteration"] is None and steps["level"] is None
    for prefix in ("train", "val", "test"):
        assert steps[f"{prefix}/*"] == "iteration"
    assert steps["prune/*"] == steps["curve/*"] == "level"

    # Running on (one more level) resumes the same W&B run, logging only the new level.
    imp.run(make_config([*DIGITS, "logger=wandb", "pruning.levels=3"], root))
    first, second = wandb_files(root)
    assert first == file
    resumed = read_run(second)
    assert resumed.run_id == run.run_id
    assert {row["level"] for row in resumed.rows_with("test/accuracy")} == {3}
    assert resumed.summary["curve/table"]["nrows"] == 4


def test_transaction_log_checksums_are_verified(tmp_path):
    cfg = make_config([*DIGITS, "logger=wandb", "pruning.levels=0"], tmp_path)
    imp.run(cfg)
    [file] = wandb_files(tmp_path)
    assert sum(1 for _ in iter_payloads(file)) > 5
    data = bytearray(file.read_bytes())
    data[20] ^= 0xFF  # inside the first record
    broken = tmp_path / "broken.wandb"
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        list(iter_payloads(broken))


def unreachable_server(monkeypatch):
    """Online mode, credentials, and a server address where nothing listens."""
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    return ["logger.mode=online"]


def log_fails_midway(monkeypatch):
    """W&B starts, then its fourth ``log`` call raises."""
    original = wandb.Run.log
    calls = []

    def failing_log(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("disk full\nsecond line of the error")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", failing_log)
    return []


@pytest.mark.parametrize(
    ("failure", "seed"),
    [(unreachable_server, 1), (log_fails_midway, 2)],
    ids=["unreachable_server", "log_fails_midway"],
)
def test_a_failing_wandb_warns_once_and_training_finishes(
    tmp_path, monkeypatch, capfd, failure, seed
):
    overrides = failure(monkeypatch)
    cfg = make_config([*DIGITS, "logger=wandb", f"seed={seed}", *overrides], tmp_path)
    store, rows = imp.run(cfg)

    assert sorted(summaries(tmp_path)) == [(seed, 0), (seed, 1), (seed, 2)]
    assert len(rows) == 3
    assert (store.path / "curve.csv").is_file()
    out, err = capfd.readouterr()
    warnings = [line for line in (out + err).splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: W&B")
    assert warnings[0] in err.splitlines()
    assert "Traceback" not in out + err
    if failure is log_fails_midway:
        # W&B got the first three rows, then nothing: the run was closed as failed.
        assert "RuntimeError: disk full" in warnings[0]
        [file] = wandb_files(tmp_path)
        run = read_run(file)
        assert [row["iteration"] for row in run.history] == [0, 50, 100]
        assert run.exit_code == 1
