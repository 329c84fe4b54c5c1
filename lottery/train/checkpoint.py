"""Orbax checkpoints of a whole training run, for resuming inside a level.

A checkpoint holds the :class:`~lottery.train.loop.RunState`: the train state (params,
optimizer state, BatchNorm statistics, step), the mask, the evaluations so far and the
training loss since the last one. Orbax writes each checkpoint into a temporary folder and
renames it into place, so a process killed while writing leaves no checkpoint that looks
whole; those temporary folders are removed when the manager opens. A checkpoint that cannot
be read (a truncated or garbled file) is skipped for the one before it, with a warning line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from lottery.train.loop import RunState

# Orbax logs every save and restore at INFO through absl; the console says what matters.
logging.getLogger("absl").setLevel(logging.ERROR)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class Checkpointer:
    """The checkpoints of one level, in ``directory``; the newest ``keep`` are kept."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = Path(directory)
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
        self.manager.save(
            run.step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"train": run.state, "mask": run.mask}),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def restore_latest(self, template: RunState) -> RunState | None:
        """The newest readable checkpoint as a RunState shaped like ``template``, or None."""
        target = {"train": template.state, "mask": template.mask}
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
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
            except Exception as error:  # any unreadable checkpoint: fall back to an older one
                reason = " ".join(str(error).split())[:160] or type(error).__name__
                _warn(
                    f"checkpoint {self.directory / str(step)} is unreadable ({reason}); "
                    "using the one before it"
                )
                continue
            return RunState(
                step,
                state["train"],
                state["mask"],
                list(meta["history"]),
                float(meta["loss_sum"]),
                int(meta["loss_steps"]),
            )
        return None

    def close(self) -> None:
        self.manager.close()
