"""``hydra/launcher=slurm``: submitit's Slurm launcher, waiting for its jobs as a user needs.

Upstream's launcher submits the job array, then waits on each job's result through ``sacct``
(a warning every few seconds where accounting is off, and a wait without end for a job that
died without writing its result: killed, out of memory, a failed run's exit), and says
nothing while it waits. This one submits the same array, then watches the jobs with
``squeue`` and the result files submitit writes:

* one line per job as it ends, with where its log is (and a failed run's own ``error:``
  line, read from that log);
* a job pending for a reason that no waiting cures (a request bigger than any node of the
  partition, a time over the partition's limit) cancels the sweep's jobs and ends the
  command in one ``error:`` line naming the launcher keys that fix it;
* a job gone from ``squeue`` without a result is reported as ended without one.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from lottery.logging import console

# How often the jobs are looked at, and how long a job may be missing from squeue without a
# result before it counts as ended without one (a result file on a shared filesystem can
# show up late).
POLL_SECONDS = float(os.environ.get("LOTTERY_SLURM_POLL", "2"))
MISSING_GRACE_SECONDS = float(os.environ.get("LOTTERY_SLURM_MISSING_GRACE", "30"))

# Pending reasons no waiting cures: what the request asks for, and the keys that change it.
SIZE = "hydra.launcher.cpus_per_task, mem_gb or gpus_per_node"
IMPOSSIBLE = {
    "PartitionConfig": f"more than a node of the partition has: lower {SIZE}, "
    "or choose another partition (hydra.launcher.partition=NAME; `sinfo -N -l` lists nodes)",
    "PartitionNodeLimit": f"more nodes than the partition allows: lower "
    f"hydra.launcher.nodes, or {SIZE}",
    "PartitionTimeLimit": "more time than the partition allows: lower "
    "hydra.launcher.timeout_min (`sinfo -s` shows each partition's limit)",
    "BadConstraints": "features no node has: change hydra.launcher.constraint",
    "InvalidQOS": "a QOS not one of yours: change hydra.launcher.qos",
    "InvalidAccount": "an account not one of yours: change hydra.launcher.account",
}


# The launcher keys a job's request is made of, said when no node can meet it.
REQUEST_KEYS = ("nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "gpus_per_node",
                "timeout_min", "partition", "constraint")


class SlurmJobsError(Exception):
    """The sweep's jobs cannot run or did not all succeed: said in one line, exit ``code``;
    ``nothing_ran``: every job was cancelled before it started (no log worth keeping)."""

    def __init__(self, message: str, code: int, nothing_ran: bool = False) -> None:
        super().__init__(message)
        self.code, self.nothing_ran = code, nothing_ran


@dataclass
class Watched:
    """One job of the array and what the watcher knows of it."""

    job: Any  # submitit.SlurmJob
    label: str  # "#0 seed=1"
    missing_since: float | None = None
    outcome: str | None = None  # "finished", "failed", "ended without a result"
    returned: JobReturn | None = None


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """``launcher``'s sweep (hydra_plugins.lottery_launchers.SlurmLauncher): submitted as
    upstream's ``BaseSubmititLauncher.launch`` submits it (the same executor, parameters and
    job array), then watched by :func:`wait_for` instead of waiting on each result."""
    import submitit

    assert launcher.config is not None
    params = dict(launcher.params)
    cluster = launcher._EXECUTOR
    init = {"folder": params.pop("submitit_folder")}
    init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{key if key in base else f"{cluster}_{key}": v for key, v in params.items()}
    )
    sweep = launcher.config.hydra.sweep
    sweep_dir = Path(str(sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in sweep:
        os.chmod(sweep_dir, mode=int(str(sweep.mode), 8))
    numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
    job_params = [
        (list(overrides), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
        for n, overrides in zip(numbers, job_overrides, strict=True)
    ]
    jobs = executor.map_array(launcher, *zip(*job_params, strict=True))
    labels = job_labels(job_overrides, numbers)
    console.print(
        f"submitted {len(jobs)} Slurm job{'s' * (len(jobs) > 1)} "
        f"({', '.join(job.job_id for job in jobs)}); their logs: "
        f"{shown(sweep_dir / '.submitit')}/<job id>/"
    )
    request = ", ".join(
        f"{key}={params[key]}" for key in REQUEST_KEYS if params.get(key) is not None
    )
    watched = [Watched(job, label) for job, label in zip(jobs, labels, strict=True)]
    return wait_for(watched, request)


def job_labels(job_overrides: Sequence[Sequence[str]], numbers: Sequence[int]) -> list[str]:
    """Each job's number and the overrides that tell it from the sweep's other jobs."""
    lists = [filter_overrides(list(overrides)) for overrides in job_overrides]
    shared = set.intersection(*(set(o) for o in lists)) if lists else set()
    return [
        " ".join([f"#{n}", *(o for o in overrides if o not in shared)])
        for n, overrides in zip(numbers, lists, strict=True)
    ]


def shown(path: Path) -> str:
    """``path`` relative to the working folder where it lies inside it."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def squeue_states() -> dict[str, tuple[str, str]] | None:
    """This user's jobs in ``squeue``: job id (array tasks apart) -> (state, reason); None
    when squeue cannot answer (the controller not reachable for a moment)."""
    listed = subprocess.run(
        ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
        capture_output=True, text=True,
    )
    if listed.returncode:
        return None
    states = {}
    for line in listed.stdout.splitlines():
        job_id, state, reason = [*line.split("|"), "", ""][:3]
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def wait_for(watched: list[Watched], request: str = "") -> list[JobReturn]:
    """Wait until every job has ended, saying so of each; their results, in order
    (``request``: what the jobs ask for, said when no node can meet it).

    Raises :class:`SlurmJobsError` when a job waits for what no node can give (the sweep's
    jobs are cancelled) and, once all have ended, when any did not succeed."""
    waiting = list(watched)
    while waiting:
        states = squeue_states()
        for entry in list(waiting):
            if entry.job.paths.result_pickle.exists():
                collect(entry)
            elif states is not None:
                state, reason = states.get(entry.job.job_id, ("", ""))
                if state == "PENDING" and reason in IMPOSSIBLE:
                    cancel([w.job.job_id for w in waiting])
                    ran = any(w.outcome is not None or states.get(w.job.job_id, ("",))[0]
                              not in ("PENDING", "") for w in watched)
                    raise SlurmJobsError(
                        f"Slurm cannot run job {entry.job.job_id} ({entry.label}): it is "
                        f"pending for {reason}, asking for {request or 'its request'}: "
                        f"{IMPOSSIBLE[reason]}; cancelled the sweep's jobs",
                        code=2,
                        nothing_ran=not ran,
                    )
                if state:
                    entry.missing_since = None
                elif entry.missing_since is None:
                    entry.missing_since = time.monotonic()
                elif time.monotonic() - entry.missing_since > MISSING_GRACE_SECONDS:
                    entry.outcome = "ended without a result"
                    say_ended(entry)
            if entry.outcome is not None:
                waiting.remove(entry)
        if waiting:
            time.sleep(POLL_SECONDS)
    failed = [entry for entry in watched if entry.outcome != "finished"]
    if failed:
        raise SlurmJobsError(
            f"{len(failed)} of {len(watched)} Slurm jobs did not finish "
            f"({', '.join(f'{e.job.job_id} {e.label}' for e in failed)}): their lines above "
            "say why and where each log is; run the same sweep again to resume them",
            code=1,
        )
    return [entry.returned for entry in watched]


def collect(entry: Watched) -> None:
    """The result file of ``entry``'s job is there: its JobReturn, or its failure."""
    try:
        entry.returned = entry.job.result()
    except Exception:  # submitit's own failure in the job: its traceback is in the log
        entry.outcome = "failed"
    else:  # a run that failed is a JobReturn too (Hydra catches the job's exception)
        entry.outcome = "finished" if entry.returned.status == JobStatus.COMPLETED else "failed"
    say_ended(entry)


def say_ended(entry: Watched) -> None:
    """One line for a job that ended: how, its run's own error line, and its log."""
    paths = entry.job.paths
    error = None
    if entry.outcome != "finished":
        error = last_error_line(paths.stderr) or raised(entry.returned)
    because = f": {error}" if error else ""
    log = shown(paths.stdout if entry.outcome == "finished" else paths.stderr)
    line = f"job {entry.job.job_id} ({entry.label}) {entry.outcome}{because}; log: {log}"
    print(line, file=sys.stderr if entry.outcome != "finished" else sys.stdout, flush=True)


def raised(returned: JobReturn | None) -> str | None:
    """What a failed job's run raised, in one line (its traceback is not in the log: Hydra
    keeps the exception in the job's result), unless it is the run's own exit status."""
    error = getattr(returned, "_return_value", None)
    if not isinstance(error, BaseException) or type(error).__name__ == "JobFailed":
        return None
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def last_error_line(log: Path) -> str | None:
    """The last ``error:`` line (the run's own one-line error) or ``stopped by`` line in a
    job's stderr log, if it has one."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return None
    said = [line for line in lines if line.startswith(("error: ", "stopped by "))]
    return said[-1] if said else None


def cancel(job_ids: list[str]) -> None:
    """Cancel the given jobs (a sweep that cannot run)."""
    subprocess.run(["scancel", *job_ids], capture_output=True)
