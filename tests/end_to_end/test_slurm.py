"""Sweeps on a real Slurm: a one-node cluster of this machine (tests/slurm.py: munged,
slurmctld and slurmd started for the module and stopped after), the jobs submitted through
``hydra/launcher=slurm_cpu`` as docs/guides/sweeps.md says, and each sweep ending in the store
that the same runs make without Slurm: a job array of seeds and pruning fractions (the
fractions sharing level 0), a job requeued in the middle of a level (SIGTERM) and a job
preempted with submitit's USR2, both stopping within seconds with a checkpoint of the step
they reached and resuming from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from conftest import store_contents as conftest_store_contents

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

# What a job asks for: one of this machine's CPUs and a little memory, so that two run at once.
ON_THIS_NODE = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.mem_gb=2"]

SMALL = ["dataset=digits", "model.hidden=[64,32]", "train.steps=200it", "train.batch_size=50",
         "train.eval_every=50it", "pruning.levels=1", "progress=false", "branches=[]"]

# A level long enough to be stopped in the middle (about 2 s on this machine), evaluated
# (and so stoppable) every 500 steps, with no checkpoint but the one the stop makes.
LONG = ["dataset=digits", "model.hidden=[64,32]", "train.steps=40000it",
        "train.batch_size=50", "train.eval_every=500it", "pruning.levels=1", "progress=false",
        "branches=[]", "train.checkpoint_every=1h"]


def store_contents(root: Path) -> dict:
    return conftest_store_contents(root, frozenset({"config.yaml"}))


@pytest.fixture(scope="module")
def cluster():
    """The one-node cluster for the module's tests. Its daemons run as this user: as root
    here (the jobs run as the user who submits them)."""
    from slurm import installed, slurm_cluster

    if os.geteuid() != 0 and not installed():
        pytest.skip("Slurm is not installed, and installing it needs root "
                    "(Debian: apt-get install slurm-wlm)")
    with slurm_cluster() as conf:
        if conf is None:
            pytest.skip("Slurm is not installed (Debian: apt-get install slurm-wlm)")
        os.environ["SLURM_CONF"] = str(conf)
        os.environ["LOTTERY_SLURM_POLL"] = "0.5"  # the submitter's squeue cadence (2 s)
        try:
            yield conf
        finally:
            os.environ.pop("SLURM_CONF", None)
            os.environ.pop("LOTTERY_SLURM_POLL", None)


def slurm(*command: str) -> str:
    return subprocess.run(list(command), capture_output=True, text=True).stdout


def test_a_sweep_of_seeds_and_fractions_runs_as_a_job_array(cluster, tmp_path):
    """Four jobs (two seeds × two fractions), two at a time on the node's two CPUs: one line
    per job with its log, and the stores of the same four runs made without Slurm."""
    sweep = ["seed=1,2", "pruning.fraction=0.2,0.5", "-m"]
    here = tmp_path / "local"
    here.mkdir()
    local = run_cli([*SMALL, *sweep, f"results_root={here}/results"], here)
    assert local.returncode == 0, local.stderr[-2000:]

    there = tmp_path / "slurm"
    there.mkdir()
    done = run_cli([*SMALL, *sweep, *ON_THIS_NODE, f"results_root={there}/results"], there)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = re.findall(r"^job (\S+) \(#\d [^)]*\) finished; log: (\S+)$", done.stdout, re.M)
    assert len(finished) == 4, done.stdout
    for _, log in finished:
        assert "Job completed successfully" in (there / log).read_text()
    assert store_contents(there / "results") == store_contents(here / "results")
    # The two fractions of a seed share its level 0: trained once, in one dense store.
    dense = sorted((there / "results").glob("*/dense_*/replicate_*/level_0"))
    assert [p.parent.name for p in dense] == ["replicate_1", "replicate_2"]


def run_until_mid_level(args: list[str], folder: Path) -> tuple[subprocess.Popen, str]:
    """Start the sweep of one job; once its level 1 has begun (and run its first stretch),
    the job's id."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lottery", *args], cwd=folder, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list(folder.rglob("level_1.partial/metrics.jsonl")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.1)
    job = slurm("squeue", "-h", "-t", "R", "-o", "%i").split()
    assert len(job) == 1, job
    return sweep, job[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The results of LONG run to the end on this machine, once for the module."""
    here = tmp_path_factory.mktemp("uninterrupted")
    local = run_cli([*LONG, f"results_root={here}/results"], here)
    assert local.returncode == 0, local.stderr[-2000:]
    return here / "results"


@pytest.mark.parametrize("how", ["scontrol requeue", "scancel --signal=USR2"])
def test_a_job_stopped_mid_level_saves_at_once_and_resumes_to_the_uninterrupted_store(
    cluster, uninterrupted, tmp_path, how
):
    """``scontrol requeue`` (SIGTERM, then SIGKILL after KillWait = 30 s) and submitit's
    preemption signal (USR2: submitit requeues the job itself) in the middle of level 1:
    the job's log says it stopped with a checkpoint of the step it reached within 10 s of
    the signal; Slurm runs it again, it resumes from that step, and the store equals an
    uninterrupted run's."""
    there = tmp_path / "slurm"
    there.mkdir()
    sweep, job = run_until_mid_level(
        [*LONG, "seed=0", "-m", *ON_THIS_NODE, f"results_root={there}/results"], there
    )
    signalled = time.monotonic()
    slurm(*how.split(), job)
    err = next(there.rglob(f".submitit/{job}/{job}_0_log.err"))
    line = None
    while line is None and time.monotonic() - signalled < 30:
        line = re.search(r"^stopped by (SIG\w+) at level 1 step ([\d,]+): saved a checkpoint "
                         r"of step \2; the job resumes from it if Slurm requeues it, as does "
                         r"the same sweep run again$",
                         err.read_text(), re.M)
        time.sleep(0.05)
    stopped_after = time.monotonic() - signalled
    assert line is not None, err.read_text()[-3000:]
    assert stopped_after < 10
    assert line[1] == ("SIGTERM" if how.startswith("scontrol") else "SIGUSR2")
    # A requeued job waits (BeginTime) before Slurm starts it again: start it now.
    deadline = time.monotonic() + 60
    while sweep.poll() is None and time.monotonic() < deadline:
        slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
        time.sleep(1)
    out, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, stderr[-3000:]
    assert re.search(rf"^job {job} \(#0\) finished; log: ", out, re.M), out
    log = next(there.rglob(f".submitit/{job}/{job}_0_log.out")).read_text()
    assert f"level 1: resuming from step {line[2]}" in log
    assert store_contents(there / "results") == store_contents(uninterrupted)


def test_a_failed_job_and_a_cancelled_one_are_each_one_line_and_the_sweep_one_more(
    cluster, tmp_path, monkeypatch
):
    """A run that diverges says its own error line in the job's line; a job cancelled while
    it runs (no result file: as if killed or out of memory) is reported once squeue no longer
    lists it, instead of waited for forever; the sweep ends in one line, exit 1, and keeps
    the jobs' logs."""
    monkeypatch.setenv("LOTTERY_SLURM_MISSING_GRACE", "3")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lottery", *LONG, "optimizer.lr=2e-3,1e9", "-m", *ON_THIS_NODE,
         f"results_root={tmp_path}/results"],
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    running: list[str] = []
    while len(running) != 1 or not list(tmp_path.rglob("level_1.partial/metrics.jsonl")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.1)
        running = slurm("squeue", "-h", "-o", "%i").split()  # until the diverged one is gone
    slurm("scancel", running[0])
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert re.fullmatch(r"job \S+ \(#1 optimizer.lr=1000000000.0\) failed: error: level 0 "
                        r"diverged: the training loss became .*; log: multirun/\S+_log.err",
                        lines[0]), lines
    assert re.fullmatch(rf"job {running[0]} \(#0 optimizer.lr=0.002\) ended without a result: "
                        r"stopped by SIGTERM at level 1 step [\d,]+: saved a checkpoint .*; "
                        r"log: multirun/\S+_log.err", lines[1]), lines
    assert lines[2].startswith("error: 2 of 2 Slurm jobs did not finish ("), lines
    assert len(lines) == 3
    assert len(list(tmp_path.rglob(".submitit/*/*_log.err"))) == 2


def test_srun_with_two_tasks_is_one_experiment_over_two_processes(cluster, tmp_path):
    """``srun -n 2 python -m lottery train.data_parallel=true ...`` under the real Slurm
    (2 CPU devices per task): one experiment over both processes, JAX finding its
    coordinator from Slurm, one store, equal to one process with 4 devices to float
    rounding (test_distributed.py's comparison)."""
    from test_distributed import EXPERIMENT, assert_same_results, environment

    one = tmp_path / "one"
    local = subprocess.run([sys.executable, "-m", "lottery", *EXPERIMENT,
                            f"results_root={one}"], cwd=tmp_path, env=environment(4),
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    two = tmp_path / "two"
    env = {**environment(2), "SLURM_CONF": str(cluster)}
    done = subprocess.run(
        ["srun", "-n", "2", "--cpus-per-task=1", "--mem=2G", sys.executable, "-m", "lottery",
         *EXPERIMENT, f"results_root={two}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results: ") == 1  # process 0 alone says it
    assert_same_results(one, two)
