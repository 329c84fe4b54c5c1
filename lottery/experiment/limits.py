"""What a run may ask of this machine and this network, checked while planning.

Each check raises one :class:`ConfigError` line before anything is written: a JAX backend
that cannot start, more seeds at once than one process should train or than fit in memory,
a data-parallel batch that does not split over the devices, and more pruning levels than the
network has weights to lose.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax

from lottery.config import Config, ConfigError
from lottery.pruning import Strategy
from lottery.pruning.strategies import levels_that_prune
from lottery.train.loop import batch_sharding

# Seeds one process trains at once (train.replicas): each is a thread with its own store,
# files and loggers, and a device's seeds share its compute, so past this many a sweep (one
# process per group of seeds) is the better tool.
MAX_REPLICAS = 64
# Copies of a seed's weights its training holds: the weights, their gradients, two Adam
# moments, the mask and a host copy (an estimate: XLA's buffers come on top).
STATE_COPIES = 6


def check_backend() -> None:
    """One line if JAX cannot start a backend (``JAX_PLATFORMS`` naming one this machine
    lacks, e.g. ``tpu``) instead of the traceback of the first array made."""
    try:
        jax.devices()
    except RuntimeError as error:
        # JAX's own hint ("set JAX_PLATFORMS='' ...") is said below, with the other fix.
        reason = " ".join(str(error).split(" (set JAX_PLATFORMS")[0].split())[:200]
        chosen = os.environ.get("JAX_PLATFORMS")
        if chosen is not None:
            raise ConfigError(
                f"JAX_PLATFORMS={chosen!r} names a backend this machine cannot start ({reason});"
                " unset it (JAX then takes what is here) or set JAX_PLATFORMS=cpu"
            ) from None
        raise ConfigError(
            f"JAX cannot start a backend ({reason}); set JAX_PLATFORMS=cpu to train on the CPU"
        ) from None


def check_data_parallel(cfg: Config) -> None:
    """With ``train.data_parallel``: the batch splits evenly over the devices (the
    trainer's own check, made before anything is written). One process of several
    (:mod:`lottery.distributed`) trains only so: each step over all their devices."""
    processes = jax.process_count()
    if processes > 1 and not cfg.train.data_parallel:
        raise ConfigError(
            f"this command is one of {processes} processes of one experiment, which train it "
            "together with train.data_parallel=true (each batch split over all their "
            "devices); add train.data_parallel=true, or run one process"
        )
    if cfg.train.data_parallel:
        batch_sharding(cfg.train.batch_size)


def check_replicas(cfg: Config, network: Any) -> None:
    """``train.replicas`` within :data:`MAX_REPLICAS` and, by an estimate of each seed's
    training state, within the memory of the devices (or of the host, on a CPU)."""
    replicas = cfg.train.replicas
    if replicas < 2:
        return
    sweep = f"seed={cfg.seed},{cfg.seed + MAX_REPLICAS},... train.replicas={MAX_REPLICAS} -m"
    if replicas > MAX_REPLICAS:
        raise ConfigError(
            f"train.replicas={replicas} is more than the {MAX_REPLICAS} seeds one process "
            "trains at once (each is a thread with its own files); run the seeds as a "
            f"sweep, in groups: {sweep}"
        )
    try:
        shapes = jax.eval_shape(network.init, jax.random.key(0))[0]
    except Exception:  # a model that cannot take the data: prepare() says so in one line
        return
    per_seed = STATE_COPIES * sum(
        math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(shapes)
    )
    devices = jax.local_devices()
    on_device = math.ceil(replicas / len(devices))
    available, where = device_memory(devices[0])
    if available is not None and on_device * per_seed > available:
        fit = min(int(available // per_seed) * len(devices), replicas - 1)
        fix = f"choose train.replicas={fit} or fewer, or run" if fit > 1 else "run"
        raise ConfigError(
            f"train.replicas={replicas} needs about {_gb(on_device * per_seed)} for the "
            f"training state of {on_device} seeds per device, and {where} has "
            f"{_gb(available)} free; {fix} the seeds one after another as a sweep: "
            f"seed={cfg.seed},{cfg.seed + 1},... -m"
        )


def check_batch_order(cfg: Config, total_steps: int, num_train: int) -> None:
    """A dataset held on the device trains from a batch order of the whole level (which
    example each step takes: ``total_steps x batch_size`` int32, made on the host and kept on
    the device, :func:`lottery.data.batch_order`): one line when it cannot fit, instead of
    numpy's MemoryError (``train.steps=100000000it`` on digits asked for 37 GiB)."""
    batch = cfg.train.batch_size
    epochs = -(-total_steps // max(1, num_train // batch))
    needed = 2 * epochs * (num_train // batch) * batch * 4  # made on the host, then copied
    available, where = device_memory(jax.local_devices()[0])
    host = host_available_memory()
    room = min(x for x in (available, host) if x is not None) if (available or host) else None
    if room is not None and needed > room / 2:
        raise ConfigError(
            f"train.steps={cfg.train.steps} ({total_steps:,} steps of train.batch_size="
            f"{batch}) needs a batch order of {_gb(needed / 2)} (the example index of every "
            f"step of a level, made on the host and held on the device), more than half of "
            f"the {_gb(room)} free ({where}); train fewer steps"
        )


def device_memory(device: jax.Device) -> tuple[float | None, str]:
    """The memory a device can give (GPUs, TPUs), or the host's available memory for a CPU
    device; None where it cannot be told."""
    stats = None
    if device.platform != "cpu":
        try:
            stats = device.memory_stats()
        except Exception:  # not every backend reports it
            stats = None
        if stats and stats.get("bytes_limit"):
            return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0)), str(device)
        return None, str(device)
    return host_available_memory(), "this machine's memory"


def host_available_memory() -> float | None:
    """``MemAvailable`` of /proc/meminfo (what can be allocated without swapping)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return None


def check_levels(cfg: Config, strategy: Strategy, settings: Any, params: Any,
                 prunable: list[str]) -> None:
    """``pruning.levels`` no more than the levels that remove a weight: each prunes exactly
    ``round(rate * n)`` of a group's ``n`` live weights, so once that rounds to 0 in every
    group the later levels would repeat the last one (the run would stop there,
    :class:`~lottery.experiment.errors.NothingLeftToPrune`). Only for strategies whose
    levels count weights so (``Strategy.weight_groups``)."""
    if strategy.weight_groups is None or cfg.pruning.levels == 0:
        return
    groups = strategy.weight_groups(params, prunable, settings)
    possible, left = levels_that_prune(groups, cfg.pruning.levels)
    if possible < cfg.pruning.levels:
        total = sum(size for _, size in groups)
        after = f"level {possible} leaves" if possible else "the dense network has"
        rates = f"pruning.fraction={cfg.pruning.fraction}" + (
            " (and pruning.layer_fractions)" if cfg.pruning.layer_fractions else ""
        )
        raise ConfigError(
            f"pruning.levels={cfg.pruning.levels} is more than this network can lose: "
            f"{after} {left:,} of its {total:,} prunable weights, of which {rates} "
            f"rounds to none, so levels {possible + 1}.."
            f"{cfg.pruning.levels} would repeat level {possible}; set pruning.levels="
            f"{possible} or fewer"
        )


def _gb(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**28 else f"{size / 2**20:,.0f} MiB"
