"""One experiment over several processes (and nodes): whether this command is one of them.

A command is one process of several when it runs under ``srun`` with several tasks
(``SLURM_NTASKS`` > 1 inside a job step: JAX reads the rest from Slurm), or when
``LOTTERY_COORDINATOR=HOST:PORT``, ``LOTTERY_NUM_PROCESSES=N`` and ``LOTTERY_PROCESS_ID=I``
name a coordinator (process 0 listens there). Environment variables, not config keys: they
say where the command runs, not what it computes (the experiment's hash never sees them),
and they must be read before JAX starts, which the config is not.

:func:`start` calls ``jax.distributed.initialize`` before JAX does anything else; then
``jax.devices()`` are every process's devices, and ``train.data_parallel=true`` splits each
batch over all of them. :func:`is_primary` (process 0) is the process that writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from lottery.config import ConfigError, RunError

COORDINATOR = "LOTTERY_COORDINATOR"
NUM_PROCESSES = "LOTTERY_NUM_PROCESSES"
PROCESS_ID = "LOTTERY_PROCESS_ID"
# Seconds after which the others give up on a process that stopped answering (killed, its
# node gone): a collective with a dead peer would otherwise wait for JAX's 100 s default.
HEARTBEAT_TIMEOUT = 20
# Seconds the processes wait for each other to start (a node scheduled late, an import).
START_TIMEOUT = 300


def under_srun(environ: Mapping[str, str]) -> bool:
    """Whether this is one task of several of a Slurm job step (``srun -n N``, N > 1)."""
    try:
        tasks = int(environ.get("SLURM_NTASKS", "1"))
    except ValueError:
        return False
    return tasks > 1 and "SLURM_STEP_ID" in environ


def coordinator_settings(environ: Mapping[str, str]) -> tuple[str, int, int] | None:
    """``(address, processes, process id)`` from the ``LOTTERY_*`` variables, None without
    them; one ConfigError line for a missing or bad one."""
    named = [name for name in (COORDINATOR, NUM_PROCESSES, PROCESS_ID) if name in environ]
    if not named:
        return None
    usage = f"{COORDINATOR}=HOST:PORT {NUM_PROCESSES}=N {PROCESS_ID}=I (0 <= I < N)"
    missing = [name for name in (COORDINATOR, NUM_PROCESSES, PROCESS_ID) if name not in named]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} not set beside {named[0]}; set {usage}")
    address = environ[COORDINATOR]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{COORDINATOR}={address!r} is not HOST:PORT; set {usage}")
    numbers = []
    for name in (NUM_PROCESSES, PROCESS_ID):
        try:
            numbers.append(int(environ[name]))
        except ValueError:
            raise ConfigError(f"{name}={environ[name]!r} is not a number; set {usage}") from None
    processes, process_id = numbers
    if processes < 1 or not 0 <= process_id < processes:
        raise ConfigError(
            f"{PROCESS_ID}={process_id} with {NUM_PROCESSES}={processes}: set {usage}"
        )
    return address, processes, process_id


def start(environ: Mapping[str, str] | None = None) -> bool:
    """Join the other processes of this experiment, if it has any (see the module's
    docstring); returns whether it does. Call it before JAX computes anything."""
    environ = os.environ if environ is None else environ
    settings = coordinator_settings(environ)
    if settings is None and not under_srun(environ):
        return False
    import jax

    if jax.distributed.is_initialized():  # a caller in Python that started it itself
        return True
    address, processes, process_id = settings or (None, None, None)
    # JAX says at INFO where it connects (Hydra prints INFO records): the console says what
    # matters. (Gloo's own lines, "[Gloo] Rank 0 is connected to 1 peer ranks", come from
    # C++ and cannot be silenced here.)
    logging.getLogger("jax._src.distributed").setLevel(logging.WARNING)
    # A program read from JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR)
    # hung the processes' first collective (jax 0.12.1, CPU, gloo: every process waited in
    # its first step after resuming): each process compiles its own.
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        jax.distributed.initialize(
            address, processes, process_id,
            initialization_timeout=START_TIMEOUT,
            heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT,
        )
    except (RuntimeError, ValueError) as error:  # no coordinator; Slurm's settings unread
        reason = " ".join(str(error).split())[:200]
        where = address or "the coordinator Slurm names"
        raise RunError(
            f"could not join the other processes of this experiment at {where} ({reason}); "
            "start every process (each with its own process id) within "
            f"{START_TIMEOUT} s, or unset {COORDINATOR} to run in one process"
        ) from None
    if jax.process_index() != 0:
        only_the_first_process_writes()
    return True


def only_the_first_process_writes() -> None:
    """In a process other than the first: write no results (the store, W&B, plots) and print
    nothing on the console; the first does both for all (the errors are still said)."""
    from lottery.atomic import set_this_process_writes
    from lottery.logging import console

    set_this_process_writes(False)
    console.quiet = True


def is_primary() -> bool:
    """Whether this process writes the results (process 0; the only one without
    :func:`start`). Imports JAX only once it has started."""
    import sys

    jax = sys.modules.get("jax")
    return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true in any process (a decision every process must take alike:
    a checkpoint due by the clock, a stop asked by a signal); ``flag`` in one process."""
    import jax

    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing in one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
