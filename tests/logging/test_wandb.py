"""W&B logging: one offline run per finished level, sent exactly once; a failing W&B never
stops a run.

W&B cannot reach its server here, so runs are offline, and each run's transaction log
(``run-<id>.wandb``) is read back with W&B's own reader, ``wandb leet inspect --json`` (one
JSON object per record).
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import wandb
from wandb.util import get_core_path

from lottery import experiment
from lottery.logging.wandb_logger import SENT_DIR, branch_of, run_id

from conftest import DIGITS, make_config, run_cli, summaries


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """No W&B settings from the machine; W&B's own config and caches in the test folder."""
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            monkeypatch.delenv(name)
    for name in ("CONFIG", "CACHE", "DATA", "ARTIFACT"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / f"wandb-{name.lower()}"))


# -- reading offline runs back with W&B's reader ------------------------------------------


@dataclass
class OfflineRun:
    """What a ``run-<id>.wandb`` file holds, from its records."""

    file: Path
    records: list[dict[str, Any]]
    run: dict[str, Any] = field(init=False)
    config: dict[str, Any] = field(init=False)
    summary: dict[str, Any] = field(init=False)
    history: list[dict[str, Any]] = field(init=False)
    metrics: list[dict[str, Any]] = field(init=False)
    artifacts: list[dict[str, Any]] = field(init=False)
    exit_code: int | None = field(init=False)

    def __post_init__(self) -> None:
        of = {}
        for record in self.records:
            of.setdefault(record["type"], []).append(record[record["type"]])
        [self.run] = of["run"]
        self.config = {}
        for update in [self.run.get("config", {}), *of.get("config", [])]:
            self.config.update(update.get("update", {}))
        self.config.pop("_wandb", None)
        self.summary = {}
        for update in of.get("summary", []):
            self.summary.update(update.get("update", {}))
        # The logged values, without W&B's own (_step, _runtime, _timestamp).
        self.history = [
            {k: v for k, v in h["item"].items() if not k.startswith("_")}
            for h in of.get("history", [])
        ]
        self.metrics = of.get("metric", [])
        self.artifacts = of.get("artifact", [])
        exits = of.get("exit", [])
        self.exit_code = exits[-1].get("exit_code", 0) if exits else None

    @property
    def run_id(self) -> str:
        return self.run["run_id"]


def read_run(file: Path) -> OfflineRun:
    """A run's transaction log, read by W&B's reader: what ``wandb leet inspect --json FILE``
    runs (``wandb/cli/leet.py``), without starting Python for each file."""
    command = [get_core_path(), "leet", "inspect", "--json", "--no-observability",
               "--run-file", str(file), str(file.parent.parent)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert records and records[0]["type"] == "header", result.stdout[:500]
    return OfflineRun(file, records)


def offline_runs(root: Path) -> dict[str, OfflineRun]:
    """Every offline run under ``<root>/wandb``, by run id (each id once)."""
    runs = [read_run(f) for f in sorted((root / "wandb").glob("offline-run-*/run-*.wandb"))]
    by_id = {run.run_id: run for run in runs}
    assert len(by_id) == len(runs), sorted(run.run_id for run in runs)
    return by_id


def level_runs(root: Path) -> dict[str, OfflineRun]:
    """The offline runs of levels and branches (not the summary runs), by run id."""
    return {rid: run for rid, run in offline_runs(root).items()
            if run.run.get("job_type") != "summary"}


def curve_table(run: OfflineRun) -> list[dict[str, Any]]:
    """The rows of the summary run's ``curve`` table, read from the run's files."""
    path = run.summary["curve.path"]  # W&B's reader flattens the table's entry
    table = json.loads((run.file.parent / "files" / path).read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def aggregated_curve_csv(curve_csv: Path) -> list[dict[str, Any]]:
    """curve.csv aggregated over replicates, by branch and level (pandas, independently)."""
    import pandas as pd

    frame = pd.read_csv(curve_csv)
    grouped = frame.groupby(["branch", "level"]).agg(
        weights_remaining_pct=("weights_remaining_pct", "mean"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", lambda a: a.std() if len(a) > 1 else 0.0),
        replicates=("test_accuracy", "size"),
    ).reset_index()
    return grouped.to_dict("records")


def local_history(replicate_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Every finished level's metrics.jsonl records, by level."""
    return {
        int(file.parent.name.removeprefix("level_")): [
            json.loads(line) for line in file.read_text().splitlines()
        ]
        for file in sorted(replicate_dir.glob("level_*/metrics.jsonl"))
        if (file.parent / "summary.json").is_file()
    }


def assert_each_level_sent_once(root: Path, digest: str, seed: int, levels: int) -> None:
    """One finished W&B run per level, whose history is the level's metrics.jsonl, and no
    other history anywhere in the offline files."""
    runs = level_runs(root)
    expected = {f"{digest}-r{seed}-L{level}": level for level in range(levels + 1)}
    assert set(runs) == set(expected)
    local = local_history(root / "mnist1d_imp" / digest / f"replicate_{seed}")
    for rid, level in expected.items():
        assert runs[rid].exit_code == 0, rid
        assert runs[rid].config["level"] == level
        assert runs[rid].history == local[level], rid


# -- the tests ----------------------------------------------------------------------------


def test_run_ids_name_the_level_and_branch_and_are_wandb_safe(tmp_path):
    level = tmp_path / "replicate_0" / "level_3"
    assert run_id("3fa0c1d2e4", 0, 3, branch_of({"branch": "imp"}, level)) == "3fa0c1d2e4-r0-L3"
    branch = level / "branch_lr_0123abcd"
    assert branch_of({"branch": "lr"}, branch) == "lr_0123abcd"  # two settings, two runs
    assert run_id("3fa0c1d2e4", 1, 3, "lr_0123abcd") == "3fa0c1d2e4-r1-L3-lr_0123abcd"
    odd = [run_id("3fa0c1d2e4", 0, 3, name) for name in ("a/b:c", "a?b%c", "x" * 200)]
    assert len(set(odd)) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in odd)
    assert odd == [run_id("3fa0c1d2e4", 0, 3, name) for name in ("a/b:c", "a?b%c", "x" * 200)]


def test_one_offline_run_per_level_with_its_metrics_config_and_summary(tmp_path, capsys):
    root = tmp_path / "results"
    cfg = make_config([*DIGITS, "logger=wandb"], root)
    store, _ = experiment.run(cfg)
    digest = store.path.name
    assert f"upload with `wandb sync {root / 'wandb'}`" in capsys.readouterr().out

    runs = level_runs(root)
    assert sorted(runs) == [f"{digest}-r0-L{level}" for level in range(3)]
    stored = summaries(root)
    local = local_history(store.replicate(0).path)
    assert [len(local[level]) for level in range(3)] == [5, 5, 5]  # iterations 0, 50, ..., 200
    for level in range(3):
        run, summary = runs[f"{digest}-r0-L{level}"], stored[(0, level)]
        # Every record of metrics.jsonl, every value, in order, and nothing else.
        assert run.history == local[level]
        assert run.run["project"] == "lottery"
        assert run.run["run_group"] == f"{cfg.name} #{digest}"  # no Hydra job: no overrides
        assert run.run["job_type"] == "level"
        assert run.run["tags"] == ["seed=0"]
        pct = f"{summary['weights_remaining_pct']:.3g}"
        assert run.run["display_name"] == f"{cfg.name}/magnitude/L{level} {pct}%"
        assert run.exit_code == 0
        assert run.config == {
            **json.loads(json.dumps(asdict(cfg))),
            "hash": digest,
            "level": level,
            "weights_remaining_pct": summary["weights_remaining_pct"],
            "branch": "imp",
            "seed": 0,
        }
        # The level's results: summary.json but the fields in the config, and the timings.
        results = {k: v for k, v in summary.items() if v is not None and k not in (
            "experiment", "hash", "dense_hash", "replicate", "level", "branch", "timing")}
        assert "test_accuracy" in results and "params_remaining" in results
        assert {k: run.summary.get(k) for k in results} == results
        assert run.summary["wall_seconds"] == summary["timing"]["wall"]
        steps = {m.get("name") or m.get("glob_name"): m.get("step_metric") for m in run.metrics}
        assert steps == {"iteration": None, "train/*": "iteration", "val/*": "iteration",
                         "test/*": "iteration"}
        assert run.artifacts == []  # logger.artifacts is off by default
    assert [runs[f"{digest}-r0-L{level}"].config["weights_remaining_pct"]
            for level in range(3)] == pytest.approx([100.0, 80.0, 64.0], abs=0.01)

    # Running the finished experiment again sends nothing: no new run, no new rows.
    files = {f: f.read_bytes() for f in (root / "wandb").glob("offline-run-*/run-*.wandb")}
    experiment.run(cfg)
    assert "wandb sync" not in capsys.readouterr().out
    assert {f: f.read_bytes() for f in (root / "wandb").glob("offline-run-*/*.wandb")} == files

    # One more level: one more run, for that level alone (and the summary run rewritten).
    experiment.run(make_config([*DIGITS, "logger=wandb", "pruning.levels=3"], root))
    new = set((root / "wandb").glob("offline-run-*/run-*.wandb")) - set(files)
    [run] = [read_run(f) for f in new if f"{digest}-curve" not in f.name]
    assert run.run_id == f"{digest}-r0-L3"
    assert run.history == local_history(store.replicate(0).path)[3]
    # The summary run rewritten whole: one copy left (its earlier folder removed), with level
    # 3, read from whichever folder holds it (once, in CI, its file was not among the new
    # names: not understood yet; a copy without level 3 still fails here).
    [curve] = [read_run(f) for f in (root / "wandb").glob("offline-run-*/run-*.wandb")
               if f"{digest}-curve" in f.name]
    assert [row["level"] for row in curve_table(curve)] == [0, 1, 2, 3]


def test_the_summary_run_holds_curve_csv_aggregated_and_its_chart(tmp_path):
    overrides = [*DIGITS, "logger=wandb", "pruning.levels=1", "branches=[random_reinit]"]
    for seed in (0, 1):
        store, _ = experiment.run(make_config([*overrides, f"seed={seed}"], tmp_path))
    runs = offline_runs(tmp_path)
    summary = runs[f"{store.digest}-curve"]
    assert summary.run["job_type"] == "summary" and summary.exit_code == 0
    table = curve_table(summary)
    expected = aggregated_curve_csv(store.path / "curve.csv")
    assert len(expected) == 3  # imp L0, L1 and random_reinit L1, two replicates each
    assert [(r["branch"], r["level"], r["replicates"]) for r in table] == [
        (r["branch"], r["level"], r["replicates"]) for r in expected]
    for got, want in zip(table, expected, strict=True):
        for key in ("weights_remaining_pct", "test_accuracy_mean", "test_accuracy_std"):
            assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # The chart: one line per branch, drawn from the same numbers.
    chart = json.loads((summary.file.parent / "files" /
                        summary.summary["sparsity_accuracy_table.path"]).read_text())
    lines = {}
    for row in chart["data"]:
        point = dict(zip(chart["columns"], row, strict=True))
        lines.setdefault(point["lineKey"], []).append(point["lineVal"])
    assert lines == {"imp": [r["test_accuracy_mean"] for r in table if r["branch"] == "imp"],
                     "random_reinit": [table[2]["test_accuracy_mean"]]}
    assert summary.summary["test/accuracy"] == pytest.approx(table[1]["test_accuracy_mean"])


# Runs ``python -m lottery ARGS`` after arranging a SIGKILL of itself right after level 1
# evaluated step 100 (as in test_resume.py).
KILLER = """
import os, runpy, signal, sys, time
sys.argv = ["lottery", *sys.argv[1:]]
from lottery.train import hooks
evaluate = hooks.Evaluate.__call__
def killing_evaluate(self, run, trainer):
    evaluate(self, run, trainer)
    if trainer.stream == 1 and run.step == 100:
        time.sleep(1)  # W&B's service writes what was logged live
        os.kill(os.getpid(), signal.SIGKILL)
hooks.Evaluate.__call__ = killing_evaluate
runpy.run_module("lottery", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_sigkill_in_level_1_then_rerun_sends_every_level_exactly_once(tmp_path):
    args = [*DIGITS, "logger=wandb", f"results_root={tmp_path}"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    [partial] = tmp_path.rglob("level_1.partial")
    digest = partial.parent.parent.name
    # Level 1's run was open, live, when the kill came (offline, W&B's service buffers
    # its file, so what it had been given is lost with it; the store has it).
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{digest}-r0-L1/run-*.wandb"))
    [level_0] = (tmp_path / "wandb").glob(f"offline-run-*-{digest}-r0-L0/run-*.wandb")
    sent = level_0.read_bytes()

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr == ""
    assert_each_level_sent_once(tmp_path, digest, 0, 2)
    assert level_0.read_bytes() == sent  # level 0 was not sent again


def test_a_cut_off_level_is_sent_again_in_full_and_once(tmp_path, monkeypatch, capfd):
    """W&B fails inside level 1's run (its offline folder holds part of the level and no
    marker): the next run replaces that folder, and sends what was never sent."""
    original = wandb.Run.log
    calls = []

    def failing_log(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # level 0's 5 rows, the summary run's 1: level 1's second row
            raise RuntimeError("disk full\nsecond line of the error")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", failing_log)
    cfg = make_config([*DIGITS, "logger=wandb", "seed=2"], tmp_path)
    store, rows = experiment.run(cfg)
    digest = store.path.name
    assert len(rows) == 3  # the store is whole
    out, err = capfd.readouterr()
    [warning] = err.splitlines()
    assert warning.startswith("warning: W&B logging stopped (RuntimeError: disk full)")
    assert "2 offline runs in" in out  # level 0's and the summary run after it
    cut = level_runs(tmp_path)
    assert set(cut) == {f"{digest}-r2-L0", f"{digest}-r2-L1"}  # then W&B went quiet
    assert cut[f"{digest}-r2-L1"].exit_code == 1
    assert len(cut[f"{digest}-r2-L1"].history) == 1  # logged live, before the failure
    sent = sorted(p.stem for p in (tmp_path / "wandb" / SENT_DIR).rglob("*.json"))
    assert sent == [f"{digest}-curve", f"{digest}-r2-L0"]

    monkeypatch.setattr(wandb.Run, "log", original)
    experiment.run(cfg)
    assert "warning" not in capfd.readouterr().err
    assert_each_level_sent_once(tmp_path, digest, 2, 2)


@pytest.mark.parametrize(("env_mode", "cfg_mode"), [("disabled", "offline"),
                                                    ("offline", "disabled")])
def test_wandb_environment_beats_the_config(tmp_path, monkeypatch, env_mode, cfg_mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    overrides = [*DIGITS, "logger=wandb", f"logger.mode={cfg_mode}", "pruning.levels=0",
                 "logger.project=from-config"]
    store, rows = experiment.run(make_config(overrides, tmp_path))
    assert len(rows) == 1
    if env_mode == "disabled":
        assert not (tmp_path / "wandb").exists()
    else:
        [run] = level_runs(tmp_path).values()
        assert run.run["project"] == "from-env"
        assert run.history == local_history(store.replicate(0).path)[0]


def test_artifacts_hold_the_mask_and_weights_of_the_level(tmp_path):
    cfg = make_config([*DIGITS, "logger=wandb", "pruning.levels=0", "seed=3"], tmp_path)
    cfg.logger.artifacts = True  # read with getattr: not (yet) in LoggerConfig
    store, _ = experiment.run(cfg)
    [run] = level_runs(tmp_path).values()
    [artifact] = run.artifacts
    assert artifact["name"] == f"ticket-{run.run_id}" and artifact["type"] == "model"
    folder = store.replicate(3).level_path(0)
    contents = {entry["path"]: entry["digest"] for entry in artifact["manifest"]["contents"]}
    assert contents == {
        name: base64.b64encode(hashlib.md5((folder / name).read_bytes()).digest()).decode()
        for name in ("mask.npz", "params.npz")
    }


def timed_lines(process: subprocess.Popen) -> list[tuple[float, str]]:
    """The lines of a process's (merged) output, each with the second it arrived."""
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in process.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    process.wait(timeout=600)
    reader.join()
    return lines


@pytest.mark.slow
def test_an_unreachable_server_warns_once_and_training_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # beats logger.mode=offline
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    args = [*DIGITS, "logger=wandb", "seed=1", f"results_root={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lottery", *args], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    lines = timed_lines(process)
    output = "\n".join(line for _, line in lines)
    assert process.returncode == 0, output[-2000:]

    stored = summaries(tmp_path)
    assert sorted(stored) == [(1, 0), (1, 1), (1, 2)]
    [curve] = tmp_path.rglob("curve.csv")
    assert len(curve.read_text().splitlines()) == 4
    warnings = [(t, line) for t, line in lines if "warning" in line.lower() or "wandb" in line]
    assert len(warnings) == 1, warnings
    [(warned_at, warning)] = warnings
    assert warning.startswith("warning: W&B logging stopped (")
    assert "Traceback" not in output
    # W&B is tried once, when level 0 starts (its run is opened live): the wait is at most
    # the time from the start to the warning (less nothing: the warning can come before
    # level 0's training ends).
    [started_at] = [t for t, line in lines if line.startswith("results: ")]
    waited = warned_at - started_at
    assert waited < 9, waited  # the 3 s timeout, W&B's start, and slack; not 20 s
    assert not (tmp_path / "wandb" / SENT_DIR).exists()  # nothing was sent


def test_each_branch_is_a_run_of_its_own(tmp_path):
    root = tmp_path / "results"
    cfg = make_config([*DIGITS, "logger=wandb", "pruning.levels=1", "branches=[random_reinit]"],
                      root)
    store, _ = experiment.run(cfg)
    digest = store.path.name
    [folder] = store.replicate(0).level_path(1).glob("branch_random_reinit_*")
    branch_id = f"{digest}-r0-L1-{folder.name.removeprefix('branch_')}"
    runs = level_runs(root)
    assert sorted(runs) == sorted([f"{digest}-r0-L0", f"{digest}-r0-L1", branch_id])
    assert runs[branch_id].run["display_name"].endswith(" random_reinit")
    run = runs[branch_id]
    assert run.config["branch"] == "random_reinit" and run.config["level"] == 1
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert run.history == [json.loads(line) for line in lines]


def _kill_when_wandb_runs(args: list[str], cwd: Path) -> tuple[list[Any], list[str]]:
    """Start ``python -m lottery ARGS``; once a W&B service (``wandb-core``) runs under it
    and a level is training, SIGKILL the command; returns the processes that were under it
    and their names, read before the kill."""
    psutil = pytest.importorskip("psutil")
    process = subprocess.Popen([sys.executable, "-m", "lottery", *args], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    command = psutil.Process(process.pid)
    deadline = time.monotonic() + 300
    try:
        while not ([p for p in command.children(recursive=True) if name_of(p) == "wandb-core"]
                   and any(cwd.rglob("level_1.partial"))):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        under = command.children(recursive=True)
        names = [name_of(p) for p in under]
    finally:
        process.kill()
        process.wait()
    return under, names


def name_of(process: Any) -> str:
    """The process's name, or "" if it ended meanwhile (children come and go while read)."""
    import psutil

    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def _still_running(processes: list[Any], seconds: float) -> list[str]:
    """Those of ``processes`` still running (not zombies) after up to ``seconds``; killed."""
    import psutil

    deadline = time.monotonic() + seconds
    while True:
        running = []
        for p in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.status() != psutil.STATUS_ZOMBIE:
                    running.append(p)
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    names = [f"{name_of(p)} {p.pid}" for p in running]
    for p in running:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return names


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [[], ["seed=0,1", "-m", "hydra/launcher=local"]],
                         ids=["run", "local sweep"])
def test_sigkill_of_the_command_leaves_no_wandb_service(tmp_path, sweep):
    """A run's wandb-core ends with it; a local sweep's workers (each with its wandb-core)
    end with the command too, instead of training on."""
    args = [*DIGITS, "train.steps=3000it", "logger=wandb", f"results_root={tmp_path}", *sweep]
    under, names = _kill_when_wandb_runs(args, tmp_path)
    assert "wandb-core" in names
    assert _still_running(under, seconds=5) == []


SWEEP_FILE = Path(__file__).parents[2] / "experiments" / "sweeps" / "imp_fraction_seed.yaml"


def agent_command(tmp_path: Path, extra: list[str], python: list[str]) -> tuple[list[str], dict]:
    """The sweep file's command and environment for the sweep point ``pruning.fraction=0.5
    seed=1``, built as ``wandb agent`` builds them (wandb/wandb_agent.py: WANDB_SWEEP_ID,
    WANDB_RUN_ID, WANDB_SWEEP_PARAM_PATH with the point, WANDB_DIR, WANDB_PROJECT), offline."""
    import yaml
    from wandb.sdk.launch.sweeps import utils as sweep_utils
    from wandb.sdk.lib import config_util

    sweep = yaml.safe_load(SWEEP_FILE.read_text())
    command = {"run_id": "agentrun1",
               "args": {"pruning.fraction": {"value": 0.5}, "seed": {"value": 1}}}
    param_path = tmp_path / "wandb" / "sweep-sweep1" / "config-agentrun1.yaml"
    config_util.save_config_file_from_dict(str(param_path), command["args"])
    variables = sweep_utils.create_sweep_command_args(command)
    variables["env"] = []  # /usr/bin/env: the same environment
    argv = []
    for part in sweep_utils.create_sweep_command(sweep["command"]):
        if part.startswith("${"):
            argv += variables.get(part[2:-1]) or []
        else:
            argv += python if part == "python" else [part]
    env = {**os.environ, "WANDB_SWEEP_ID": "sweep1", "WANDB_RUN_ID": "agentrun1",
           "WANDB_SWEEP_PARAM_PATH": str(param_path), "WANDB_DIR": str(tmp_path),
           "WANDB_PROJECT": "lottery", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return [*argv, *extra], env


@pytest.mark.slow
def test_under_wandb_agent_each_level_is_a_run_and_a_kill_leaves_each_complete_once(tmp_path):
    extra = [*DIGITS, f"results_root={tmp_path}"]
    argv, env = agent_command(tmp_path, extra, [sys.executable])
    assert argv[1:5] == ["-m", "lottery", "logger=wandb", "logger.mode=online"]  # offline env
    killer = [sys.executable, "-c", KILLER, *argv[3:]]  # the same, killed in level 1
    killed = subprocess.run(killer, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    [replicate] = [p for p in tmp_path.glob("mnist1d_imp/*/replicate_1")
                   if not p.parent.name.startswith("dense_")]
    digest = replicate.parent.name
    assert_each_level_sent_once(tmp_path, digest, 1, 2)
    runs = offline_runs(tmp_path)
    agent = runs["agentrun1"]  # the agent's run: the summary run of the sweep point
    assert agent.run["job_type"] == "summary" and agent.run.get("sweep_id") == "sweep1"
    assert agent.config["pruning.fraction"] == 0.5 and agent.config["seed"] == 1
    assert [row["level"] for row in curve_table(agent)] == [0, 1, 2]
    group = runs[f"{digest}-r1-L1"].run["run_group"]  # the overrides that change results
    assert group.startswith("mnist1d_imp pruning.fraction=0.5 ") and "seed" not in group
