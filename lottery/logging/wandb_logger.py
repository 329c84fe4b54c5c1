"""Weights & Biases logging: one W&B run per experiment hash and replicate.

``logger=wandb`` (``conf/logger/wandb.yaml``) sends what the local store records to W&B as
well, offline by default: W&B writes its files under ``logger.dir`` (default
``<results_root>/wandb``) and ``wandb sync <dir>`` uploads them later.

* Run: group ``<name>/<hash>``, name ``<name>-<hash>-r<seed>``, id ``<hash>-r<seed>`` (the
  same on every re-run, with ``resume="allow"``, so finishing more levels or extending a run
  goes on in the same W&B run), config = the whole resolved config plus ``hash``.
* History: one row per evaluation — ``level``, ``iteration``, ``prune/weights_remaining``
  (% of prunable weights alive), ``train/loss``, ``val/loss``, ``val/accuracy``,
  ``test/loss``, ``test/accuracy`` (``iteration`` is their step metric) — and one row per
  finished level — ``level``, ``prune/weights_remaining`` and ``curve/…`` (final, best and
  early-stop test accuracy, early-stop iteration, wall seconds; ``level`` is their step
  metric).
* At the end: ``curve/table``, the replicate's rows of ``curve.csv`` as a ``wandb.Table``,
  and ``curve/sparsity_accuracy``, a line plot of test accuracy against weights remaining.

The local store is the record and W&B a copy: if W&B fails at any point (no network, no
credentials, a full disk, a bug), one line starting ``warning: W&B`` goes to stderr, the
logger stops sending anything, and training goes on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lottery.config import Config
from lottery.store import CURVE_COLUMNS

# Seconds wandb.init may wait for W&B's server (online mode) before giving up; the
# environment variable WANDB_INIT_TIMEOUT, when set, takes its place.
INIT_TIMEOUT = 20.0

EVAL_KEYS = ("train/loss", "val/loss", "val/accuracy", "test/loss", "test/accuracy")
LEVEL_KEYS = (
    "test_accuracy",
    "best_test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
)


def run_id(digest: str, seed: int) -> str:
    """The W&B run id of a replicate: the same on every run, so W&B resumes it."""
    return f"{digest}-r{seed}"


def wandb_dir(cfg: Config) -> Path:
    """The folder W&B's run folders go in: ``logger.dir`` or ``<results_root>/wandb``."""
    if cfg.logger.dir:
        return Path(cfg.logger.dir).expanduser().resolve()
    return Path(cfg.results_root).expanduser().resolve() / "wandb"


class WandbLogger:
    """A :class:`~lottery.logging.loggers.RunLogger` that copies metrics to W&B.

    W&B starts on the first call, so building the logger costs nothing. Every W&B call goes
    through :meth:`_guard`: the first failure warns once and turns the logger off.
    """

    def __init__(self, cfg: Config, digest: str) -> None:
        self.cfg = cfg
        self.digest = digest
        self.dir = wandb_dir(cfg)
        self.run: Any = None
        self.failed = False
        self._weights: dict[int, float] = {0: 100.0}

    # -- W&B calls, guarded -------------------------------------------------------------

    def _warn(self, error: BaseException) -> None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        if len(reason) > 200:
            reason = reason[:197] + "..."
        print(
            f"warning: W&B logging stopped ({reason}); results still go to the local store",
            file=sys.stderr,
            flush=True,
        )

    def _guard(self, action: Any, *args: Any) -> Any:
        """Run one W&B action; on any error warn once, close the run quietly and go quiet."""
        if self.failed:
            return None
        try:
            return action(*args)
        except Exception as error:  # W&B must never stop training
            self.failed = True
            self._warn(error)
            run, self.run = self.run, None
            if run is not None:
                with contextlib.suppress(Exception):
                    run.finish(exit_code=1)
            return None

    def _start(self) -> None:
        import wandb

        cfg = self.cfg
        if cfg.logger.mode != "disabled":
            self.dir.mkdir(parents=True, exist_ok=True)
        # W&B puts its run folders in <dir>/wandb: pass the parent when the name is "wandb".
        root = self.dir.parent if self.dir.name == "wandb" else self.dir
        config = asdict(cfg)
        config["hash"] = self.digest
        # Quiet, and nothing W&B would collect besides our metrics: no console capture, no
        # system metrics, no git or code or requirements snapshot.
        settings: dict[str, Any] = {
            "silent": True,
            "console": "off",
            "disable_git": True,
            "save_code": False,
            "x_save_requirements": False,
            "x_disable_stats": True,
            # Read here: W&B reads its environment once per process.
            "init_timeout": float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT)),
        }
        run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=f"{cfg.name}/{self.digest}",
            name=f"{cfg.name}-{self.digest}-r{cfg.seed}",
            id=run_id(self.digest, cfg.seed),
            resume="allow",
            job_type="imp",
            config=config,
            dir=str(root),
            mode=cfg.logger.mode,
            reinit="finish_previous",
            settings=wandb.Settings(**settings),
        )
        run.define_metric("iteration")
        run.define_metric("level")
        for prefix in ("train", "val", "test"):
            run.define_metric(f"{prefix}/*", step_metric="iteration")
        run.define_metric("prune/*", step_metric="level")
        run.define_metric("curve/*", step_metric="level")
        run.define_metric("val/loss", step_metric="iteration", summary="min")
        run.define_metric("test/accuracy", step_metric="iteration", summary="max,last")
        self.run = run

    def _ensure_started(self) -> bool:
        if self.run is None and not self.failed:
            self._guard(self._start)
        return self.run is not None

    def _log(self, row: dict[str, Any]) -> None:
        if self._ensure_started():
            self._guard(self.run.log, row)

    # -- the RunLogger interface -------------------------------------------------------

    def begin_level(self, level: int, weights_remaining_pct: float) -> None:
        self._weights[level] = weights_remaining_pct

    def log_eval(self, level: int, record: dict[str, float]) -> None:
        if self.failed:
            return
        row: dict[str, Any] = {"level": level, "iteration": record["iteration"]}
        if level in self._weights:
            row["prune/weights_remaining"] = self._weights[level]
        row.update({key: record[key] for key in EVAL_KEYS if key in record})
        self._log(row)

    def log_level(self, summary: dict[str, Any], folder: Path | None = None) -> None:
        if self.failed:
            return
        level = summary["level"]
        self._weights[level] = summary["weights_remaining_pct"]
        row: dict[str, Any] = {
            "level": level,
            "prune/weights_remaining": summary["weights_remaining_pct"],
            "prune/params_remaining": summary.get("params_remaining"),
        }
        for key in LEVEL_KEYS:
            if summary.get(key) is not None:
                row[f"curve/{key}"] = summary[key]
        wall = (summary.get("timing") or {}).get("wall")
        if wall is not None:
            row["curve/wall_seconds"] = wall
        self._log({k: v for k, v in row.items() if v is not None})

    def finish(self, rows: list[dict[str, Any]]) -> None:
        if not self._ensure_started():
            return
        self._guard(self._finish, rows)

    def _finish(self, rows: list[dict[str, Any]]) -> None:
        import wandb

        mine = [r for r in rows if int(r["replicate"]) == self.cfg.seed]
        table = wandb.Table(
            columns=list(CURVE_COLUMNS), data=[[r.get(c) for c in CURVE_COLUMNS] for r in mine]
        )
        title = f"{self.cfg.name} [{self.digest}] replicate {self.cfg.seed}"
        plot = wandb.plot.line(
            table, "weights_remaining_pct", "test_accuracy", title=f"{title}: test accuracy"
        )
        self.run.log({"curve/table": table, "curve/sparsity_accuracy": plot})
        mode = self.run.settings.mode
        sync_dir = self.run.settings.sync_dir
        run, self.run = self.run, None
        run.finish()
        if mode == "offline":
            print(
                f"W&B: offline run in {sync_dir}; upload with `wandb sync {self.dir}` "
                f"(or `wandb sync {sync_dir}` for this run alone)",
                flush=True,
            )
