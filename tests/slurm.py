"""A one-node Slurm cluster of this machine alone: munged (credentials), slurmctld and slurmd
on free ports, in a folder of its own, the node described as ``slurmd -C`` finds this
machine (its CPUs and memory, no GPU). sbatch accepts or refuses requests as a real cluster
does, and the jobs it accepts run here. Used by tests/end_to_end/test_slurm.py,
tests/end_to_end/test_sweeps.py and tests/bad_inputs.py; needs Debian's slurm-wlm (installed
by :func:`installed` as root)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue")

CONF = """ClusterName=lotterytest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.sock
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmUser={user}
SlurmdUser={user}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def installed() -> bool:
    """Whether Slurm's tools are here; installs Debian's slurm-wlm first where they are not
    and this runs as root (as the Fashion-MNIST fixture installs its package), under a lock
    so that the test workers do not run apt at the same time."""
    if not all(shutil.which(tool) is not None for tool in TOOLS) and os.geteuid() == 0:
        import fcntl

        with open(Path(tempfile.gettempdir()) / "lottery-tests-apt.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if shutil.which("slurmctld") is None:
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                quiet = {"env": env, "capture_output": True}
                subprocess.run(["apt-get", "update", "-qq"], **quiet)
                subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm"], **quiet)
    return all(shutil.which(tool) is not None for tool in TOOLS)


def this_node() -> tuple[int, int]:
    """This machine's CPUs and memory (MB), as slurmd finds them (``slurmd -C``)."""
    found = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
    fields = dict(word.split("=", 1) for word in found.split() if "=" in word)
    return int(fields.get("CPUs", os.cpu_count() or 1)), int(fields.get("RealMemory", 1000))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def slurm_cluster(timeout: float = 60.0) -> Iterator[Path | None]:
    """The cluster's ``slurm.conf`` (for ``SLURM_CONF``) once its node is idle; None where
    Slurm is not installed. Its daemons are stopped, its jobs with them, and its folder
    removed afterwards."""
    if not installed():
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: munge's socket path is limited
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    cpus, memory_mb = this_node()
    conf.write_text(CONF.format(
        host=socket.gethostname(), folder=folder, user=getpass.getuser(), cpus=cpus,
        memory_mb=memory_mb, ctld_port=_free_port(), slurmd_port=_free_port(),
    ))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    daemons = [subprocess.Popen(
        ["munged", "--foreground", "--force", f"--key-file={key}",
         f"--socket={folder}/munge.sock", f"--pid-file={folder}/munged.pid",
         f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"], **quiet)]
    try:
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                        **quiet))
        _wait_until(lambda: "UP" in _run(["scontrol", "ping"], env), daemons, folder, timeout,
                    "slurmctld")
        daemons.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env, **quiet))
        _wait_until(lambda: "idle" in _run(["sinfo", "-h", "-o", "%T"], env), daemons, folder,
                    timeout, "slurmd")
        yield conf
    finally:
        if len(daemons) == 3:  # the jobs still there end with the cluster
            subprocess.run(["scancel", "-u", getpass.getuser()], env=env, capture_output=True)
            deadline = time.monotonic() + 30
            while _run(["squeue", "-h"], env).strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        shutil.rmtree(folder, ignore_errors=True)


def _run(command: list[str], env: dict[str, str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, env=env).stdout


def _wait_until(ready: Any, daemons: list[subprocess.Popen], folder: Path, timeout: float,
                name: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if any(d.poll() is not None for d in daemons) or time.monotonic() > deadline:
            log = folder / f"{name}.log"
            raise RuntimeError(f"{name} did not start: " +
                               (log.read_text()[-2000:] if log.is_file() else "no log"))
        time.sleep(0.2)
