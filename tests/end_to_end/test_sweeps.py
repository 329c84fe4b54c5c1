"""Sweeps through Hydra's launchers, run for real on this machine: joblib (``hydra/launcher=
local``, several processes at once) and submitit's local executor (what ``hydra/launcher=
slurm`` runs on a cluster), each job a full run into the shared results store."""

import json

import pytest

from conftest import DIGITS, run_cli

SMALL = [o for o in DIGITS if not o.startswith("pruning.levels")] + ["pruning.levels=1"]


def finished(root):
    """(experiment hash, replicate, level) of every finished level under ``root``."""
    found = set()
    for file in root.rglob("level_*/summary.json"):
        summary = json.loads(file.read_text())
        found.add((file.parents[2].name, summary["replicate"], summary["level"]))
    return found


@pytest.mark.slow
def test_a_local_sweep_over_seeds_runs_both_into_one_experiment(tmp_path):
    results = tmp_path / "results"
    result = run_cli(
        [*SMALL, f"results_root={results}", "seed=0,1", "-m", "hydra/launcher=local"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [experiment] = [p for p in (results / "mnist1d_imp").iterdir() if not p.name.startswith("d")]
    assert {(r, lv) for h, r, lv in finished(results) if h == experiment.name} == {
        (0, 0), (0, 1), (1, 0), (1, 1),
    }
    curve = (experiment / "curve.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in curve[1:]] == [
        ["0", "0"], ["0", "1"], ["1", "0"], ["1", "1"],
    ]
    assert [p.name for p in results.iterdir()] == ["mnist1d_imp"]  # no sweep folders in it
    assert len(list((tmp_path / "multirun").glob("*/multirun.yaml"))) == 1


@pytest.mark.slow
def test_a_submitit_sweep_over_fractions_shares_level_0_and_keeps_job_logs(tmp_path):
    results = tmp_path / "results"
    result = run_cli(
        [*SMALL, f"results_root={results}", "pruning.fraction=0.2,0.5",
         "hydra/launcher=submitit_local", "-m"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    store = results / "mnist1d_imp"
    dense = [p for p in store.iterdir() if p.name.startswith("dense_")]
    experiments = [p for p in store.iterdir() if not p.name.startswith("dense_")]
    assert len(dense) == 1 and len(experiments) == 2  # one level 0 for both fractions
    levels = finished(results)
    for experiment in experiments:
        assert (experiment.name, 0, 1) in levels
        assert (experiment / "replicate_0" / "level_0").is_symlink()
    files = store.glob("*/replicate_0/level_1/summary.json")
    summaries = [json.loads(f.read_text()) for f in files]
    assert sorted(round(s["weights_remaining_pct"]) for s in summaries) == [50, 80]
    logs = list((tmp_path / "multirun").glob("*/.submitit/*/*_log.out"))
    assert len(logs) == 2 and all("level  1:" in log.read_text() for log in logs)


def test_the_slurm_profile_composes_and_is_overridable():
    from hydra import compose, initialize_config_dir

    from lottery.cli import CONFIG_DIR
    from lottery.config import register

    register()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.gpus_per_node=2"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.cpus_per_task) == ("gpu", 2, 8)
    assert launcher.max_num_timeout > 0  # preempted or timed-out jobs are requeued


def test_a_slurm_sweep_without_slurm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # whether Slurm is installed or not
    result = run_cli(["seed=1,2", "-m", "hydra/launcher=slurm", f"results_root={tmp_path}/r"],
                     tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra/launcher=slurm needs Slurm (no `srun` on this machine); start the sweep "
        "on the cluster's login node, or use hydra/launcher=local on this machine"
    ]
    assert not (tmp_path / "r").exists()


def test_the_wandb_sweep_file_gives_valid_commands():
    """Every grid point of experiments/sweeps/*.yaml, expanded as the W&B agent does
    (``${args_no_hyphens}`` = ``key=value`` per parameter), is a command that composes."""
    import itertools

    import yaml

    from lottery.cli import check_overrides

    from conftest import REPO

    for file in (REPO / "experiments" / "sweeps").glob("*.yaml"):
        sweep = yaml.safe_load(file.read_text())
        command = sweep["command"]
        assert command[:4] == ["${env}", "python", "-m", "lottery"], file
        fixed = [arg for arg in command[4:] if not arg.startswith("${")]
        names = list(sweep["parameters"])
        grid = [sweep["parameters"][name]["values"] for name in names]
        for values in itertools.product(*grid):
            args = [f"{name}={value}" for name, value in zip(names, values, strict=True)]
            assert check_overrides([*fixed, *args]) is None, (file, args)


def test_a_sweep_point_bad_only_in_combination_stops_the_sweep_before_any_job(tmp_path):
    """gradual with 10 levels is bad; magnitude with 10 and gradual with 1 are good: each value
    is good with the other sweep's first value, so only the whole product finds it."""
    result = run_cli(["-m", "pruning.method=magnitude,gradual", "pruning.levels=1,10",
                      "results_root=out"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: pruning.levels=10 does not apply to pruning.method=gradual, which prunes "
        "inside one training; set pruning.levels=1"
    ]
    assert list(tmp_path.iterdir()) == []  # no multirun folder, no results


def test_the_bad_point_of_a_sweep_is_named_when_its_error_does_not_name_it():
    from lottery.cli import check_overrides

    message = check_overrides(["-m", "seed=0,1", "optimizer=sgd,adam", "optimizer.momentum=0.9"])
    assert message == (
        "optimizer.momentum=0.9 does not apply to optimizer.name='adam' (only sgd uses it); "
        "remove it or choose optimizer=sgd (sweep point: seed=0 optimizer=adam)"
    )
    # A group sweep (a composition per choice) and value sweeps (applied to it) together.
    assert check_overrides(["-m", "model=mlp,mnist1d_cnn", "model.width=8,0",
                            "model.hidden=[10]"]) is not None
    assert check_overrides(["-m", "seed=0,1,2", "optimizer=sgd,adam", "optimizer.lr=0.1,0.2",
                            "pruning.fraction=0.2,0.5"]) is None


def test_a_sweep_past_the_bound_is_checked_value_by_value(monkeypatch):
    from lottery import cli

    together = ["-m", "pruning.method=magnitude,gradual", "pruning.levels=1,10"]
    monkeypatch.setattr(cli, "MAX_CHECKED_POINTS", 3)
    assert cli.check_overrides(together) is None  # found by its job, as the comment says
    assert "pruning.fraction=1.5" in cli.check_overrides([*together, "pruning.fraction=0.2,1.5"])


DIVERGING = [*SMALL, "pruning.levels=0", "train.steps=100it", "train.eval_every=50it"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_a_sweep_whose_every_job_failed_leaves_no_sweep_folder(tmp_path, launcher):
    chosen = [] if launcher == "basic" else ["hydra/launcher=local"]
    result = run_cli([*DIVERGING, f"results_root={tmp_path}/results", "optimizer.lr=1e9,1e10",
                      "-m", *chosen], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: level 0 diverged" in result.stderr
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_a_sweep_with_a_finished_job_keeps_its_folder(tmp_path):
    from lottery.sweeps import FINISHED

    result = run_cli([*DIVERGING, f"results_root={tmp_path}/results", "optimizer.lr=1e-3,1e9",
                      "-m"], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    [sweep] = (tmp_path / "multirun").iterdir()
    assert (sweep / "multirun.yaml").is_file()
    assert (sweep / "0" / FINISHED).is_file() and not (sweep / "1" / FINISHED).exists()


@pytest.mark.slow
def test_a_failed_sweep_leaves_a_folder_it_did_not_make(tmp_path):
    """hydra.sweep.dir an existing folder: kept, with what was in it."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = run_cli([*DIVERGING, f"results_root={tmp_path}/results", "optimizer.lr=1e9",
                      f"hydra.sweep.dir={folder}", "-m"], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "multirun.yaml").is_file()


# -- Slurm refusing a request: a real cluster of this machine alone ------------------------


@pytest.fixture
def slurm_controller(monkeypatch):
    """A one-node Slurm cluster of this machine alone (tests/slurm.py), no GPU; skipped
    where Slurm is not installed (Debian: apt-get install slurm-wlm)."""
    from slurm import slurm_cluster

    with slurm_cluster() as conf:
        if conf is None:
            pytest.skip("Slurm is not installed (Debian: apt-get install slurm-wlm)")
        monkeypatch.setenv("SLURM_CONF", str(conf))
        yield conf


@pytest.mark.parametrize(("request_keys", "expected"), [
    ([], "error: sbatch refused the sweep's jobs (Invalid generic resource (gres) "
         "specification); set hydra.launcher.gpus_per_node=0 where the cluster has no GPUs, "
         "or choose a partition with GPUs (hydra.launcher.partition=NAME)"),
    (["hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=nope"],
     "error: sbatch refused the sweep's jobs (invalid partition specified: nope); choose a "
     "partition `sinfo -s` lists: hydra.launcher.partition=NAME"),
], ids=["a GPU on a cluster without", "an unknown partition"])
def test_a_request_sbatch_refuses_is_one_line_and_leaves_no_folder(
    slurm_controller, tmp_path, request_keys, expected
):
    result = run_cli(["seed=1,2", "-m", "hydra/launcher=slurm", *request_keys,
                      f"results_root={tmp_path}/results"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [expected]
    assert list(tmp_path.iterdir()) == []  # no multirun folder (nor .submitit), no results


def test_sbatch_refusal_reads_submitits_own_error(tmp_path, monkeypatch):
    """submitit's CommandFunction (what submits the sweep) running a program named sbatch
    that refuses as sbatch does: the FailedJobError it raises is one line with the fix; any
    other command's failure is not taken for sbatch's."""
    from submitit.core.utils import CommandFunction, FailedJobError

    from lottery.sweeps import sbatch_refusal

    refusing = tmp_path / "sbatch"
    refusing.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid "
                        "account or account/partition combination specified' >&2\nexit 1\n")
    refusing.chmod(0o755)
    for command, expected in ((str(refusing), "(Invalid account or account/partition "
                               "combination specified); name an account of yours: "
                               "hydra.launcher.account=NAME"), ("false", None)):
        with pytest.raises(FailedJobError) as raised:
            CommandFunction([command], verbose=True)()
        message = sbatch_refusal(raised.value)
        assert message == (None if expected is None else
                           f"sbatch refused the sweep's jobs {expected}")


def test_the_slurm_jobs_are_named_lottery(slurm_controller, tmp_path):
    """The job sbatch accepted is named ``lottery-<experiment>`` in squeue, on the CPU
    profile's request (submitit's default would be the module, ``__main__``). The sweep
    (which waits for its job) is stopped once squeue lists it."""
    import getpass
    import subprocess
    import sys
    import time

    sweep = subprocess.Popen(
        [sys.executable, "-m", "lottery", "seed=1", "-m", "hydra/launcher=slurm_cpu",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=0",
         f"results_root={tmp_path}/results"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    names: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not names and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            listed = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True)
            names = listed.stdout.split()
    finally:
        sweep.kill()
        _, stderr = sweep.communicate()
        subprocess.run(["scancel", "-u", getpass.getuser()], capture_output=True)
    assert names == ["lottery-mnist1d_imp"], stderr[-2000:]
