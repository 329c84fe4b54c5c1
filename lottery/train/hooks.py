"""The hooks of the training loop: evaluation, a callback at fixed steps, checkpoints, masks.

Every hook asks for absolute steps (multiples of a cadence, or fixed steps), never steps
counted from where a run started: see :mod:`lottery.train.loop`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import jax

if TYPE_CHECKING:
    from lottery.train.checkpoint import Checkpointer
    from lottery.train.loop import RunState, Trainer

Record = dict[str, float]


def multiples(period: int, start: int, end: int) -> range:
    """The multiples of ``period`` in ``(start, end]``."""
    return range((start // period + 1) * period, end + 1, period)


class Evaluate:
    """Evaluate every ``every`` steps, at the level's ``first`` step and at its end.

    The record (``iteration``, ``train/loss`` averaged over the steps since the previous
    evaluation, ``val/…``, ``test/…``) is appended to the run's history and given to
    ``on_record``. A run resumed from a checkpoint evaluates at exactly the steps the
    uninterrupted run does: not at the step it resumes from, unless that step is one of
    them (a checkpoint of a step cadence can lie between two evaluations).
    """

    def __init__(
        self, every: int, on_record: Callable[[Record], None] | None = None, *, first: int = 0
    ) -> None:
        self.every, self.on_record, self.first = every, on_record, first

    def steps(self, start: int, end: int) -> Iterable[int]:
        steps = {end, *multiples(self.every, start, end)}
        if start <= self.first <= end:
            steps.add(self.first)
        return steps

    def __call__(self, run: RunState, trainer: Trainer) -> None:
        if run.history and run.history[-1]["iteration"] == run.step:
            return
        record: Record = {"iteration": run.step}
        loss = run.take_train_loss()
        if loss is not None:
            record["train/loss"] = loss
        record.update(trainer.evaluate(run.state.params, run.state.batch_stats))
        run.history.append(record)
        if self.on_record is not None:
            self.on_record(record)


class AtSteps:
    """Call ``action(run)`` at fixed steps (e.g. keep the rewind point the moment it passes)."""

    def __init__(self, at: Iterable[int], action: Callable[[RunState], None]) -> None:
        self.at, self.action = frozenset(at), action

    def steps(self, start: int, end: int) -> Iterable[int]:
        return self.at

    def __call__(self, run: RunState, trainer: Trainer) -> None:
        self.action(run)


class Checkpoint:
    """Save the whole run with ``checkpointer`` on a step cadence, or on a time cadence.

    With ``every_steps`` it saves at each multiple of it. With ``every_seconds`` it looks at
    the steps of ``boundaries`` (the evaluations: steps the loop stops at anyway, so the
    stretches of training are the same with or without checkpoints) and saves at the first
    one reached that long after the previous save or the start. Never at the run's end: the
    finished level is written right after.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        boundaries: int = 1,
    ) -> None:
        if (every_steps is None) == (every_seconds is None):
            raise ValueError("give exactly one of every_steps and every_seconds")
        self.checkpointer = checkpointer
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.boundaries = boundaries
        self.last_save = time.monotonic()
        self.saves = 0
        self.saved_step: int | None = None
        self.seconds = 0.0  # spent saving

    def steps(self, start: int, end: int) -> Iterable[int]:
        self.last_save = time.monotonic()
        period = self.every_steps or self.boundaries
        return [s for s in multiples(period, start, end) if s < end]

    def __call__(self, run: RunState, trainer: Trainer) -> None:
        elapsed = time.monotonic() - self.last_save
        if self.every_seconds is not None and elapsed < self.every_seconds:
            return
        self.save_now(run)

    def save_now(self, run: RunState) -> None:
        """Save ``run`` now, whatever the cadence (unless this step is saved already): the
        loop calls it when the job is being stopped (:mod:`lottery.interrupts`)."""
        if self.saved_step == run.step:
            return
        begin = time.perf_counter()
        self.checkpointer.save(run)
        self.seconds += time.perf_counter() - begin
        self.saves += 1
        self.saved_step = run.step
        self.last_save = time.monotonic()


class UpdateMask:
    """Replace the mask at the given steps with ``update(run, trainer) -> mask`` (gradual
    pruning, dynamic sparse training).

    The new mask is applied to the weights at once, so a weight it prunes is exactly 0.0 from
    that step on; the optimizer state is kept (its entries for pruned weights never move the
    weight again, since the train step masks gradients and updates), except for the weights
    the new mask revives: their moments, left decaying since they were pruned, are zeroed,
    so a regrown weight starts as a fresh one. A run resumed at one of the steps does not
    update again (its checkpoint was saved after the update), except at the level's
    ``first`` step (no checkpoint is saved there; None: the first of the steps).
    """

    def __init__(
        self,
        at: Iterable[int],
        update: Callable[[RunState, Trainer], Any],
        first: int | None = None,
    ) -> None:
        self.at, self.update = sorted(set(at)), update
        self.first = first if first is not None else (self.at[0] if self.at else 0)

    def steps(self, start: int, end: int) -> Iterable[int]:
        return [s for s in self.at if start < s < end or s == start == self.first]

    def __call__(self, run: RunState, trainer: Trainer) -> None:
        from lottery.train.steps import masked

        old = run.mask
        run.mask = jax.tree.map(jax.numpy.asarray, self.update(run, trainer))
        if trainer.placement is not None:  # data parallel: where the rest of the state is
            run.mask = jax.device_put(run.mask, trainer.placement)
        run.state = run.state.replace(
            params=masked(run.state.params, run.mask),
            opt_state=without_revived_moments(trainer.tx, run.state.opt_state, old, run.mask),
        )


def without_revived_moments(tx: Any, opt_state: Any, old: Any, new: Any) -> Any:
    """``opt_state`` with the entries of the weights ``new`` revives (pruned in ``old``) 0."""
    import optax

    fresh = jax.tree.map(lambda o, n: jax.numpy.logical_or(o, jax.numpy.logical_not(n)), old, new)
    return optax.tree_utils.tree_map_params(
        tx, lambda leaf, keep: jax.numpy.where(keep, leaf, jax.numpy.zeros_like(leaf)),
        opt_state, fresh,
    )
