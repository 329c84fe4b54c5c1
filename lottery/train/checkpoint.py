"""Orbax checkpoints of a whole training run, for resuming inside a level.

A checkpoint holds the :class:`~lottery.train.loop.RunState`: the train state (params,
optimizer state, BatchNorm statistics, step), the mask, the evaluations so far and the
training loss since the last one. Orbax writes each checkpoint into a temporary folder and
renames it into place, so a process killed while writing leaves no checkpoint that looks
whole; those temporary folders are removed when the manager opens. A checkpoint that cannot
be read (a truncated or garbled file, an emptied folder) is removed, with a warning line, and
the one before it is used: its step is then written again as training passes it. A full disk
while Orbax writes is the ``OSError`` (``ENOSPC``) that every other write gives.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from lottery.train.loop import RunState

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


@contextlib.contextmanager
def _unraisables_held() -> Iterator[list[Any]]:
    """Hold the exceptions Python could not raise (``sys.unraisablehook``) during the block,
    and give those left in the list to the usual hook after it."""
    held: list[Any] = []
    usual = sys.unraisablehook
    sys.unraisablehook = held.append
    try:
        yield held
    finally:
        sys.unraisablehook = usual
        for unraisable in held:
            usual(unraisable)


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
        args = ocp.args.Composite(
            state=ocp.args.StandardSave({"train": run.state, "mask": run.mask}),
            meta=ocp.args.JsonSave(meta),
        )
        with _unraisables_held() as held:
            try:
                self.manager.save(run.step, args=args, force=True)
            except Exception as error:
                if not is_disk_full(error):
                    raise
                # The writes still in flight when Orbax gave up find its event loop closed.
                held[:] = [u for u in held if "Event loop is closed" not in str(u.exc_value)]
                # Orbax's unfinished write stays a tmp folder, removed when a manager opens.
                raise OSError(
                    errno.ENOSPC, "No space left on device", str(self.directory)
                ) from None

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
        return RunState(
            step,
            state["train"],
            state["mask"],
            list(meta["history"]),
            float(meta["loss_sum"]),
            int(meta["loss_steps"]),
        )

    def close(self) -> None:
        self.manager.close()
