"""Hydra sweeps (``-m``) around the runs: what a failed sweep leaves, and Slurm's refusals.

* A sweep whose every job failed leaves no folder: :class:`SweepFolder` (a Hydra callback,
  ``hydra.callbacks`` in ``conf/config.yaml``) notes, before the sweeper makes it, whether the
  sweep folder (``multirun/<time>``) is new; each job whose run ended well leaves
  :data:`FINISHED` in its job folder (:func:`mark_job_finished`); and when the command fails,
  :func:`remove_failed_sweep` removes the folder this command made if no job finished in it.
  A sweep whose jobs run on their own (submitit's launchers, which may still run jobs of the
  array when one has failed, and keep their logs in that folder) keeps it, unless nothing was
  submitted at all.
* ``hydra/launcher=slurm`` (:func:`sbatch_refusals_in_one_line`): a request sbatch refuses
  (a GPU on a cluster without one, an unknown partition, ...) is one ``error:`` line with
  sbatch's own reason and the launcher key that fixes it, instead of submitit's traceback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lottery.logging import error_line
from lottery.slurm_jobs import SlurmJobsError

FINISHED = ".finished"  # in a job's folder of a sweep: that job's run ended well

# Launchers whose jobs run on their own (and keep their logs in the sweep folder).
JOBS_OF_THEIR_OWN = ("submitit", "lottery_launchers")


@dataclass
class SweepState:
    """The sweep of this command, as :class:`SweepFolder` found it before it started."""

    folder: Path | None = None  # the sweep folder (hydra.sweep.dir)
    made: Path | None = None  # the outermost folder this command made for it, if any
    removable: bool = True  # False while jobs may run outside this process

    def reset(self) -> None:
        self.folder, self.made, self.removable = None, None, True


SWEEP = SweepState()


class SweepFolder(Callback):
    """Notes the sweep folder before the sweeper makes it (see the module's docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)).absolute()
        SWEEP.folder, SWEEP.made = folder, outermost_missing(folder)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        SWEEP.removable = not any(name in launcher for name in JOBS_OF_THEIR_OWN)


def outermost_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist (None if it exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing = path
    return missing


def mark_job_finished() -> None:
    """In a sweep's job whose run ended well: say so in its job folder (the sweep folder is
    then kept, whatever the other jobs do). Nothing outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        Path(HydraConfig.get().runtime.output_dir, FINISHED).touch()


_WATCHING = False  # whether this process already watches its parent (end_with_the_command)


def end_with_the_command() -> None:
    """In a job that runs in a worker process of the command (``hydra/launcher=local``:
    joblib's workers): SIGKILL this process within a second of the command being gone.

    Killing the command (``kill -9``, a lost terminal) would otherwise leave its workers
    training, each with its W&B service (``wandb-core``, which ends only with its own parent,
    the worker). A job killed so resumes when the command runs again, as after any kill.
    Nothing where the job runs in the command's own process, or under submitit (its jobs are
    meant to outlive the command that submitted them).
    """
    import multiprocessing
    import signal
    import threading
    import time

    global _WATCHING
    if multiprocessing.parent_process() is None or _WATCHING:
        return
    _WATCHING = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-the-command", daemon=True).start()


def remove_failed_sweep() -> None:
    """After this command's sweep failed: remove the sweep folder if this command made it,
    no job finished in it and no job can still be running; then the parents it made, if
    they are empty."""
    folder, made = SWEEP.folder, SWEEP.made
    if folder is None or made is None or not SWEEP.removable or not folder.is_dir():
        return
    if any(folder.rglob(FINISHED)):
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if not parent.is_relative_to(made):
            break
        with contextlib.suppress(OSError):  # not empty: another command's folders are in it
            parent.rmdir()


# -- Slurm ---------------------------------------------------------------------------------

# Launcher keys (hydra.launcher.*) that fix a request sbatch refuses, by words of its reason.
SBATCH_FIXES = (
    (("gres", "gpu"), "set hydra.launcher.gpus_per_node=0 where the cluster has no GPUs, or "
     "choose a partition with GPUs (hydra.launcher.partition=NAME)"),
    (("account",), "name an account of yours: hydra.launcher.account=NAME"),
    (("qos",), "name a QOS of yours: hydra.launcher.qos=NAME"),
    (("partition",), "choose a partition `sinfo -s` lists: hydra.launcher.partition=NAME"),
    (("memory", "mem "), "ask for less memory: hydra.launcher.mem_gb=N"),
    (("time limit",), "ask for less time: hydra.launcher.timeout_min=N"),
)
SBATCH_FIX = ("change the request: hydra.launcher.partition, gpus_per_node, cpus_per_task, "
              "mem_gb, timeout_min")


def sbatch_refusal(error: BaseException) -> str | None:
    """The one line for submitit's error when sbatch refused the submission, else None.

    submitit runs sbatch through ``CommandFunction``, which raises its ``FailedJobError``
    (sbatch's stderr) from the ``CalledProcessError`` of the sbatch command.
    """
    from submitit.core.utils import FailedJobError

    cause = error.__cause__
    if not isinstance(error, FailedJobError) or not isinstance(
        cause, subprocess.CalledProcessError
    ):
        return None
    command = cause.cmd if isinstance(cause.cmd, list | tuple) else str(cause.cmd).split()
    if not command or Path(str(command[0])).name != "sbatch":
        return None
    reason = sbatch_reason(str(cause.stderr or error))
    lowered = reason.lower()
    fix = next((fix for words, fix in SBATCH_FIXES if any(w in lowered for w in words)),
               SBATCH_FIX)
    return f"sbatch refused the sweep's jobs ({reason}); {fix}"


def sbatch_reason(stderr: str) -> str:
    """sbatch's first meaningful line: its first error, without ``sbatch: error:`` and
    ``Batch job submission failed:``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    line = (errors or lines or [f"exit status {stderr!r}"])[0]
    for prefix in ("sbatch: error:", "sbatch:", "error:", "Batch job submission failed:"):
        line = line.removeprefix(prefix).strip()
    return line


class HeldSubmititStderr:
    """sys.stderr as it is, but for what submitit's ``CommandFunction`` prints (a failed
    command's stderr, right before it raises it): held back, to be said in one line or
    released."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.held: list[str] = []

    def write(self, text: str) -> int:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller == "submitit.core.utils":
            self.held.append(text)
            return len(text)
        return self.stream.write(text)

    def release(self) -> None:
        for text in self.held:
            self.stream.write(text)
        self.held.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def sbatch_refusals_in_one_line(slurm: bool) -> Iterator[None]:
    """Around Hydra's sweep with ``hydra/launcher=slurm`` (``slurm``): a submission sbatch
    refuses ends in one line, exit status 2, and no sweep folder.

    Hydra catches a launcher's exception and prints it over many lines (submitit's error
    and traceback) unless ``HYDRA_FULL_ERROR`` is set, when it lets it through: set here (the
    Slurm jobs inherit it, so a job's own error is shown in full in its log), so that the
    refusal reaches this function. Any other exception goes on, in full.
    """
    if not slurm:
        yield
        return
    set_here = "HYDRA_FULL_ERROR" not in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    stderr = HeldSubmititStderr(sys.stderr)
    try:
        with contextlib.redirect_stderr(stderr):  # type: ignore[type-var]
            yield
    except SlurmJobsError as error:  # submitted, but not all ran: said in one line
        stderr.release()
        SWEEP.removable = error.nothing_ran  # else the jobs' logs stay
        error_line(str(error))
        raise SystemExit(error.code) from None
    except Exception as error:
        message = sbatch_refusal(error)
        if message is None:
            raise
        stderr.held.clear()  # sbatch's lines: said in the one line
        SWEEP.removable = True  # nothing was submitted
        error_line(message)
        raise SystemExit(2) from None
    finally:
        stderr.release()
        if set_here:  # the caller's process as it was (lottery.run, tests)
            os.environ.pop("HYDRA_FULL_ERROR", None)
