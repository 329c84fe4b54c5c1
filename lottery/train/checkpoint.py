"""Orbax checkpoints of a whole training run, for resuming inside a level.

A checkpoint holds the :class:`~lottery.train.loop.RunState`: the train state (params,
optimizer state, BatchNorm statistics, step), the mask, the evaluations so far and the
training loss since the last one. Orbax writes each checkpoint into a temporary folder and
renames it into place, so a process killed while writing leaves no checkpoint that looks
whole; those temporary folders are removed when the manager opens. A checkpoint that cannot
be read (a truncated or garbled file, an emptied folder) is removed, with a warning line, and
the one before it is used: its step is then written again as training passes it. A full disk
is the ``OSError`` (``ENOSPC``) that every other write gives: said before writing when the
checkpoint cannot fit, and mapped from tensorstore's ``RESOURCE_EXHAUSTED`` when the disk fills
during the write.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from lottery.train.loop import RunState, UnfinishedStretch

# Orbax logs every save and restore at INFO through absl; the console says what matters.
logging.getLogger("absl").setLevel(logging.ERROR)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or one it came from) is a full disk: an ``OSError`` with ``ENOSPC``,
    or tensorstore's ``RESOURCE_EXHAUSTED`` (a ``ValueError`` naming OS error 28)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(seen)
        if "RESOURCE_EXHAUSTED" in text and (
            "os_error_code='28'" in text or "No space left on device" in text
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _remove_non_folder(directory: Path) -> None:
    """A file (or broken link) where the checkpoint folder belongs: removed, with a warning
    (checkpoints only serve resuming; the level then trains from its beginning)."""
    if directory.is_dir() or not (directory.exists() or directory.is_symlink()):
        return
    directory.unlink()
    _warn(f"{directory} was not a folder; removed it (the level trains from its beginning)")


# Room for a checkpoint's files beside its arrays (Orbax's metadata: some KiB per array).
ROOM_FOR_METADATA = 1 << 20

# The loggers through which Orbax's threads and asyncio report a failed write (each failed
# array as a traceback, on the console Hydra logs to).
WRITE_REPORTERS = ("absl", "asyncio")


class _Reports:
    """What Python and Orbax reported during a save: exceptions that could not be raised
    (``sys.unraisablehook``) and log records of :data:`WRITE_REPORTERS`."""

    def __init__(self) -> None:
        self.unraisables: list[Any] = []
        self.records: list[logging.LogRecord] = []

    def hold(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False  # not now: given to the logger after the save, or dropped

    def drop(self) -> None:
        self.unraisables.clear()
        self.records.clear()


@contextlib.contextmanager
def _reports_held() -> Iterator[_Reports]:
    """Hold the reports of the block, and give those not dropped to their usual handlers
    after it (a save that fails for a full disk drops them: its one line says it all)."""
    reports, usual = _Reports(), sys.unraisablehook
    loggers = [logging.getLogger(name) for name in WRITE_REPORTERS]
    sys.unraisablehook = reports.unraisables.append
    for logger in loggers:
        logger.addFilter(reports.hold)
    try:
        yield reports
    finally:
        sys.unraisablehook = usual
        for logger in loggers:
            logger.removeFilter(reports.hold)
        for unraisable in reports.unraisables:
            usual(unraisable)
        for record in reports.records:
            logging.getLogger(record.name).handle(record)


class Checkpointer:
    """The checkpoints of one level, in ``directory``; the newest ``keep`` are kept."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = Path(directory)
        _remove_non_folder(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                cleanup_tmp_directories=True,
                # Synchronous: a save is on disk when the call returns, and nothing is left
                # in flight when the level finishes and its folder is renamed.
                enable_async_checkpointing=False,
            ),
        )

    def save(self, run: RunState) -> None:
        """Write ``run`` as the checkpoint of step ``run.step``."""
        meta = {
            "step": run.step,
            "history": run.history,
            "loss_sum": run.loss_sum,
            "loss_steps": run.loss_steps,
        }
        if run.unfinished is not None:  # stopped inside a stretch (preempted)
            meta["unfinished"] = {
                "start": run.unfinished.start, "losses": run.unfinished.losses
            }
        args = ocp.args.Composite(
            state=ocp.args.StandardSave({"train": run.state, "mask": run.mask}),
            meta=ocp.args.JsonSave(meta),
        )
        self._ensure_room(run)
        with _reports_held() as reports:
            disk_full = False
            try:
                self.manager.save(run.step, args=args, force=True)
            except Exception as error:
                if not is_disk_full(error):
                    raise
                disk_full = True
            if disk_full:  # out of the except block: its traceback no longer holds the tasks
                self._end_failed_writes()
                reports.drop()
        if disk_full:
            # Orbax's unfinished write stays a tmp folder, removed when a manager opens.
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))

    def _ensure_room(self, run: RunState) -> None:
        """Raise the full-disk ``OSError`` before writing if the checkpoint cannot fit.

        Orbax's writes run in threads: on a full disk each fails with its own traceback, some
        of them after the save has returned, so a checkpoint is not begun without room for
        its arrays (uncompressed) and :data:`ROOM_FOR_METADATA`."""
        leaves = jax.tree.leaves((run.state, run.mask))
        needed = sum(int(getattr(leaf, "nbytes", 8)) for leaf in leaves) + ROOM_FOR_METADATA
        existing = next(p for p in (self.directory, *self.directory.parents) if p.exists())
        if shutil.disk_usage(existing).free < needed:  # (made by process 0 of several)
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))

    def _end_failed_writes(self) -> None:
        """Let Orbax's other writes of a failed save end, and collect their asyncio tasks.

        Each failed too: Orbax's threads log their tracebacks, and asyncio logs the tasks
        whose error nobody read when they are collected; collected here, while held."""
        with contextlib.suppress(Exception):
            self.manager.wait_until_finished()
        gc.collect()

    def restore_latest(self, template: RunState) -> RunState | None:
        """The newest readable checkpoint as a RunState shaped like ``template``, or None.

        Each newer one that cannot be read is removed (with a warning line), so that its
        step can be saved again when training passes it.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self._restore(step, template)
            except Exception as error:  # any unreadable checkpoint: fall back to an older one
                reason = " ".join(str(error).split())[:160] or type(error).__name__
                shutil.rmtree(self.directory / str(step), ignore_errors=True)
                self.manager.reload()
                _warn(
                    f"checkpoint {self.directory / str(step)} is unreadable ({reason}); "
                    "removed it and using the one before it"
                )
        return None

    def _restore(self, step: int, template: RunState) -> RunState:
        target = {"train": template.state, "mask": template.mask}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        meta: dict[str, Any] = restored["meta"]
        state = restored["state"]
        if meta["step"] != step:
            raise ValueError(f"it says step {meta['step']}")
        unfinished = meta.get("unfinished")
        return RunState(
            step,
            state["train"],
            state["mask"],
            list(meta["history"]),
            float(meta["loss_sum"]),
            int(meta["loss_steps"]),
            None if unfinished is None else UnfinishedStretch(
                int(unfinished["start"]), [float(x) for x in unfinished["losses"]]
            ),
        )

    def close(self) -> None:
        self.manager.close()
