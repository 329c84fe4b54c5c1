"""A Slurm controller of this machine alone, for sbatch to accept or refuse requests:
slurmctld (with munged for its credentials) on free ports, one node, no GPU, in a folder of
its own. Used by tests/test_sweeps.py and tests/bad_inputs.py; needs Debian's slurm-wlm."""

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

TOOLS = ("munged", "slurmctld", "sbatch", "srun", "scontrol")

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
SlurmctldLogFile={folder}/slurmctld.log
SlurmUser={user}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName={host} CPUs=1 RealMemory=1000 State=UNKNOWN
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def slurm_controller(timeout: float = 30.0) -> Iterator[Path | None]:
    """The controller's ``slurm.conf`` (for ``SLURM_CONF``) while it runs; None where Slurm
    is not installed. Its daemons are stopped and its folder removed afterwards."""
    if not installed():
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: munge's socket path is limited
    (folder / "state").mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname(), folder=folder, user=getpass.getuser(),
                                ctld_port=_free_port(), slurmd_port=_free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    munged = subprocess.Popen(
        ["munged", "--foreground", "--force", f"--key-file={key}",
         f"--socket={folder}/munge.sock", f"--pid-file={folder}/munged.pid",
         f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"], **quiet)
    slurmctld = subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env, **quiet)
    try:
        deadline = time.monotonic() + timeout
        while "UP" not in subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                                         env=env).stdout:
            if slurmctld.poll() is not None or time.monotonic() > deadline:
                log = folder / "slurmctld.log"
                raise RuntimeError("slurmctld did not start: " +
                                   (log.read_text()[-2000:] if log.is_file() else "no log"))
            time.sleep(0.2)
        yield conf
    finally:
        for daemon in (slurmctld, munged):
            daemon.terminate()
            daemon.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
