"""Many replicas' training computed in one vmapped step (``train.replicas=N``).

Each replica (a seed) runs its whole experiment in a thread of its own, exactly as it would
alone: pruning, evaluation, checkpoints, resume, files. Only its stretches of training meet
here. :meth:`Trainer.train` hands each stretch to the :class:`ReplicaBatcher`, which waits
until every live replica has handed one in (or finished), stacks the stretches that compute
the same thing on the same device (same optimizer, same number of steps; the step itself may
differ, it is in each replica's state) and runs each such group as one jit-compiled
``jax.vmap`` call.

With several local devices (GPUs, or a CPU's cores as devices with
``--xla_force_host_platform_device_count=2``), replica i lives on device i mod D, with its
data and evaluation; each device's group is dispatched without waiting for the others', so
the devices compute at once (one executable sharded over a replica axis is no faster than one
device on a CPU; a group per device is: docs/benchmarks.md, "Design measurements").

Why threads rather than one loop over stacked states: the driver (levels, branches, hooks,
files, resume) stays the one a single run uses, so a replica cannot drift from what training
it alone does; a thread only waits while XLA computes, which releases the GIL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from lottery.train.feeds import DeviceFeed


class Trainer(Protocol):
    """What the batcher uses of a replica's :class:`lottery.train.loop.Trainer` (a protocol,
    so that the loop, which hands its stretches here, is not imported back)."""

    kind: str  # which replicas compute the same thing: the optimizer and network
    device: jax.Device | None
    feed: DeviceFeed
    key: jax.Array
    stream: int
    timing: Any  # its Timing: the compile seconds of the vmapped steps are added to it
    replica_steps: Any

    def _compiled_fn(self, key: Any, jitted: Any, *args: Any, **static: Any) -> Any: ...


# On a CPU device a vmapped step is no faster than the replicas' steps one after another
# (benchmarks/replicas.py; docs/benchmarks.md), so there each device runs its replicas' own
# steps and the gain comes from the devices computing at once; on GPUs and TPUs the vmapped
# step fills the chip.
VMAP_ON_CPU = False


def worth_batching() -> bool:
    """Whether replicas gain from training together here: on GPUs and TPUs (the vmapped
    step), and on a CPU with several devices (the devices compute at once). On one CPU
    device nothing would run at once, so the seeds run one after another (threads there
    are slower than one run after another: docs/benchmarks.md)."""
    return jax.default_backend() != "cpu" or VMAP_ON_CPU or jax.local_device_count() > 1


@dataclass(eq=False)
class _Stretch:
    """One replica's request: train ``state`` for ``num_steps`` with its trainer's data."""

    trainer: Trainer
    state: Any
    mask: Any
    num_steps: int
    result: tuple[Any, jax.Array] | None = None
    error: BaseException | None = None


class ReplicaBatcher:
    """Gathers the training stretches of ``replicas`` threads and runs them together."""

    def __init__(self, replicas: int, vmap: bool | None = None) -> None:
        # Whether a device's replicas run as one vmapped step (default: not on a CPU).
        self.vmap = (jax.default_backend() != "cpu" or VMAP_ON_CPU) if vmap is None else vmap
        self._cond = threading.Condition()
        self._live = replicas
        self._waiting: list[_Stretch] = []
        self._stopped = False
        # The stacked batch orders of each group, kept while the same replicas train the
        # same streams together (stacking a level's whole order every stretch would cost
        # more than a step of a small model).
        self._orders: dict[tuple, jax.Array] = {}
        self._compiled_steps: dict[tuple, Any] = {}
        self.calls = 0  # vmapped calls made (for tests and benchmarks)

    # -- what replica threads call ----------------------------------------------------------

    def run(self, trainer: Trainer, state: Any, mask: Any, num_steps: int) -> tuple[Any, Any]:
        """Train one replica's ``state`` for ``num_steps`` with the others; (state, mean loss).

        Raises KeyboardInterrupt once :meth:`stop` was called (Ctrl-C in the main thread).
        """
        stretch = _Stretch(trainer, state, mask, num_steps)
        with self._cond:
            if self._stopped:
                raise KeyboardInterrupt
            self._waiting.append(stretch)
            self._dispatch_if_everyone_waits()
            while stretch.result is None and stretch.error is None:
                if self._stopped:
                    self._waiting.remove(stretch)
                    raise KeyboardInterrupt
                self._cond.wait()
        if stretch.error is not None:
            raise stretch.error
        return stretch.result

    def start_round(self, replicas: int) -> None:
        """Wait for ``replicas`` threads again, once the last ones have all left (benchmarks:
        rounds of the same replicas that reuse the compiled steps)."""
        with self._cond:
            self._live = replicas

    def leave(self) -> None:
        """A replica thread is done (finished or failed): the others no longer wait for it."""
        with self._cond:
            self._live -= 1
            self._dispatch_if_everyone_waits()

    def stop(self) -> None:
        """Make every waiting and later stretch raise KeyboardInterrupt (Ctrl-C)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # -- the batching -----------------------------------------------------------------------

    def _dispatch_if_everyone_waits(self) -> None:
        """Run every waiting stretch once each live replica has handed one in. Called with
        the lock held; the other live threads are all waiting, so computing here is safe.

        The groups (one per device and kind of step) are dispatched one after the other
        without waiting for their results: the devices compute at the same time.
        """
        if not self._waiting or len(self._waiting) < self._live or self._stopped:
            return
        groups: dict[tuple, list[_Stretch]] = {}
        for stretch in self._waiting:
            trainer = stretch.trainer
            groups.setdefault((trainer.device, trainer.kind, stretch.num_steps), []).append(
                stretch
            )
        self._waiting = []
        running = {_members(group) for group in groups.values()}
        self._orders = {k: v for k, v in self._orders.items() if k in running}
        for group in groups.values():
            try:
                results = self._run_group(group)
            except BaseException as error:  # every member fails with it, not one at random
                for stretch in group:
                    stretch.error = error
                continue
            for stretch, result in zip(group, results, strict=True):
                stretch.result = result
        self._cond.notify_all()

    def _run_group(self, group: list[_Stretch]) -> list[tuple[Any, Any]]:
        """One group's stretches as one vmapped call on their device; the results unstacked
        (asynchronously: nothing here waits for the device)."""
        first = group[0]
        trainer = first.trainer
        if len(group) == 1 or not self.vmap:  # each replica's own (unbatched) steps
            return [
                s.trainer.feed.run(
                    s.trainer._compiled_fn, s.state, s.mask, s.trainer.key, 0, s.num_steps
                )[:2]
                for s in group
            ]
        count = len(group)
        state, mask, keys = _stack(
            [(s.state, s.mask, s.trainer.key) for s in group], trainer.device
        )
        members = _members(group)
        if members not in self._orders:
            self._orders[members] = _stack([s.trainer.feed.order for s in group], trainer.device)
        order = self._orders[members]
        x, y = trainer.feed.x, trainer.feed.y
        chunk = min(first.num_steps, trainer.feed.max_fused or first.num_steps)
        losses, done = [], 0
        while done < first.num_steps:
            n = min(chunk, first.num_steps - done)
            args = (state, mask, x, y, order, keys, n)
            state, loss = self._compiled(trainer, args)(*args[:6])
            losses.append(loss * n)
            done += n
            self.calls += 1
        loss = sum(losses) / first.num_steps
        return _unstack((state, loss), count)


    def _compiled(self, trainer: Trainer, args: tuple) -> Any:
        """The vmapped steps compiled for these arguments, once per kind, device, count of
        replicas and of steps (whichever replica's trainer comes first in a group)."""
        count, num_steps = jax.tree.leaves(args[0])[0].shape[0], args[6]
        key = (trainer.kind, trainer.device, count, num_steps)
        if key not in self._compiled_steps:
            begin = time.perf_counter()
            self._compiled_steps[key] = trainer.replica_steps.lower(*args).compile()
            trainer.timing.compile += time.perf_counter() - begin
        return self._compiled_steps[key]


def _members(group: list[_Stretch]) -> tuple:
    """Which replicas a group holds, and the data streams they train on."""
    return tuple((id(s.trainer), s.trainer.stream) for s in group)


@jax.jit
def _stacked(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _stack(trees: list[Any], device: jax.Device | None) -> Any:
    """The trees stacked on a new leading axis, in one compiled call (one dispatch, where a
    stack per leaf costs more than a step of a small model)."""
    if device is not None:
        trees = jax.device_put(trees, device)
    return _stacked(trees)


@partial(jax.jit, static_argnums=1)
def _unstack(tree: Any, count: int) -> list[Any]:
    """The inverse of :func:`_stack`, in one compiled call."""
    return [jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in range(count)]
