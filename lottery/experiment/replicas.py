"""``train.replicas=N``: N seeds of one experiment trained at once, one thread per seed.

Each seed is the :class:`Experiment` a single run would make (its own replicate folder,
resume, branches, loggers); their trainers share one :class:`ReplicaBatcher`, which runs the
seeds' training steps as one vmapped step per device (see :mod:`lottery.train.replicas`).
Seed i trains on local device i mod D.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import jax

from lottery import interrupts
from lottery.config import ConfigError, Interrupted, RunError
from lottery.experiment.driver import Experiment, remove_unfinished
from lottery.experiment.errors import LevelDiverged
from lottery.experiment.plan import Plan, with_seed
from lottery.logging import RunLogger, console, make_loggers
from lottery.store import ExperimentStore
from lottery.train.replicas import ReplicaBatcher, worth_batching

# Seconds between the main thread's looks at the replica threads (so Ctrl-C reaches it).
_JOIN_POLL = 0.2


class LockedLogger:
    """A logger shared by replica threads: one call at a time (W&B starts and finishes runs
    in a process-wide state)."""

    def __init__(self, logger: RunLogger, lock: threading.Lock) -> None:
        self.logger, self.lock = logger, lock

    def begin_level(
        self, level: int, weights_remaining_pct: float, folder: Path | None = None
    ) -> None:
        with self.lock:
            self.logger.begin_level(level, weights_remaining_pct, folder)

    def log_eval(self, level: int, record: dict[str, float]) -> None:
        with self.lock:
            self.logger.log_eval(level, record)

    def log_level(self, summary: dict[str, Any], folder: Path) -> None:
        with self.lock:
            self.logger.log_level(summary, folder)

    def finish(self, rows: list[dict[str, Any]]) -> None:
        with self.lock:
            self.logger.finish(rows)


def replica_experiments(plan: Plan, batcher: ReplicaBatcher | None) -> list[Experiment]:
    """The experiments of seeds ``seed .. seed + replicas - 1``, seed i on device i mod D,
    their loggers taking turns (with no batcher: plain runs, one after another)."""
    lock = threading.Lock()
    devices = jax.local_devices()
    experiments = []
    for index in range(plan.cfg.train.replicas):
        replica = with_seed(plan, plan.cfg.seed + index)
        loggers = [LockedLogger(logger, lock) for logger in make_loggers(replica.cfg, plan.digest)]
        device = devices[index % len(devices)] if batcher is not None else None
        experiments.append(Experiment(replica, loggers, batcher, device, plan.cfg))
    return experiments


def run_replicas(plan: Plan) -> tuple[ExperimentStore, list[dict[str, Any]]]:
    """Run seeds ``seed .. seed + replicas - 1`` of ``plan`` together; the store and curve.

    A seed that fails does not stop the others; the first failure is raised (one line, with
    its seed) once every seed has stopped. Ctrl-C stops them all at their next step.
    """
    together = worth_batching()
    batcher = ReplicaBatcher(plan.cfg.train.replicas) if together else None
    experiments = replica_experiments(plan, batcher)
    seeds = [experiment.plan.cfg.seed for experiment in experiments]
    errors: dict[int, BaseException] = {}
    if batcher is None:  # one CPU device: one after another, in this thread
        console.print(
            f"train.replicas={len(seeds)} on one CPU device: the seeds train one after "
            "another (nothing would run at once)"
        )
        for seed, experiment in zip(seeds, experiments, strict=True):
            try:
                experiment.run()
            except (ConfigError, RunError) as error:
                errors[seed] = error
                if isinstance(error, Interrupted):
                    break
        return _finished(experiments, seeds, errors)

    def work(seed: int, experiment: Experiment) -> None:
        try:
            experiment.run()
        except BaseException as error:  # reported by the main thread, with its seed
            errors[seed] = error
        finally:
            batcher.leave()

    made_here = [p for p in experiments[0].shared_folders() if not p.exists()]
    threads = [
        threading.Thread(target=work, args=(seed, e), name=f"seed {seed}", daemon=True)
        for seed, e in zip(seeds, experiments, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(_JOIN_POLL)
                interrupts.raise_if_requested()  # a Ctrl-C whose KeyboardInterrupt was lost
    except KeyboardInterrupt:
        batcher.stop()  # every seed ends at its next step, keeping its checkpoints
        for thread in threads:
            thread.join()
    if errors and all(isinstance(e, (LevelDiverged, ConfigError)) for e in errors.values()):
        remove_unfinished(made_here)  # what no seed finished anything in (as a single run)
    return _finished(experiments, seeds, errors)


def _finished(
    experiments: list[Experiment], seeds: list[int], errors: dict[int, BaseException]
) -> tuple[ExperimentStore, list[dict[str, Any]]]:
    """The store and curve once every seed has stopped; the first seed's error, if any."""
    for seed in seeds:
        if seed in errors:
            raise _with_seed(errors[seed], seed)
    store = experiments[0].store
    return store, store.write_curve()


def _with_seed(error: BaseException, seed: int) -> BaseException:
    """The error a seed's thread ended with, its message naming the seed."""
    if isinstance(error, ConfigError):
        return ConfigError(f"seed {seed}: {error}")
    if isinstance(error, Interrupted):
        return error  # the same for every seed; the command line exits 130 for it
    if isinstance(error, RunError):
        return RunError(f"seed {seed}: {error}")
    return error
