"""Weights & Biases: one W&B run per finished level (and branch), copied from the store.

``logger=wandb`` (``conf/logger/wandb.yaml``) copies the local store to W&B, offline by
default: W&B writes its run folders under ``logger.dir`` (default ``<results_root>/wandb``)
and ``wandb sync <dir>`` uploads them later. The store is the record; W&B is a copy filled
from it, and it can be filled again (see *Exactly once*).

* One run per finished level or branch, made in :meth:`WandbLogger.log_level` from the
  level's folder: ``wandb.init``, the level's whole history from ``metrics.jsonl`` (one row per
  evaluation: ``iteration``, ``train/loss``, ``val/loss``, ``val/accuracy``, ``test/loss``,
  ``test/accuracy``; ``iteration`` is their step metric), its ``summary.json`` in the run
  summary (``test_accuracy``, ``early_stop_*``, ``weights_remaining_pct``,
  ``params_remaining``, ``layers``, ...; ``wall_seconds`` for ``timing.wall``; the fields
  naming the level are in the config), ``finish``. ``begin_level`` and ``log_eval`` do
  nothing: the console shows live progress.
* Group ``<name>/<hash>``, job type ``replicate_<seed>``, name
  ``<name>-<hash>-r<seed>-L<level>[-<branch>]``, config = the whole resolved config plus
  ``hash``, ``level``, ``weights_remaining_pct``, ``branch`` and ``seed``: a W&B scatter or
  line panel of ``test_accuracy`` against ``weights_remaining_pct``, grouped by ``hash``, is
  the sparsity–accuracy curve, across replicates and sweeps. For that reason there is no
  per-experiment summary run at the end (it would repeat these runs, and change every time a
  level is added).
* Run id ``<hash>-r<seed>-L<level>[-<branch>]`` (:func:`run_id`): the same on every run, so
  a level never gets a second W&B run.

*Exactly once.* After a level's W&B run has finished, a marker
``<W&B dir>/lottery-sent/[<entity>/]<project>/<run id>.json`` is written (atomically), and
later runs skip that level; delete markers to send levels again. A level whose W&B run was cut
off (SIGKILL, Ctrl-C, a W&B error: no marker) is sent again by the next run: offline, its
cut-off folder is deleted and the level written again in full; online, the run is resumed
and gets only the history rows the server lacks (see :meth:`WandbLogger._send`).

*Precedence.* W&B's environment variables beat the config: ``WANDB_MODE`` beats
``logger.mode``, ``WANDB_PROJECT`` and ``WANDB_ENTITY`` beat ``logger.project`` and
``logger.entity``, ``WANDB_DIR`` beats ``logger.dir``, ``WANDB_INIT_TIMEOUT`` beats the
default of :data:`INIT_TIMEOUT` seconds, and ``WANDB_SILENT``, ``WANDB_CONSOLE``,
``WANDB_DISABLE_GIT``, ``WANDB_SAVE_CODE``, ``WANDB__DISABLE_STATS`` and
``WANDB__SAVE_REQUIREMENTS`` beat this logger's quiet defaults. The id, name, group and job
type are always the level's (``WANDB_RUN_ID``, ``WANDB_NAME``, ... do not apply).

*Artifacts.* With ``logger.artifacts`` true, the level's ``mask.npz`` and ``params.npz`` go
to W&B as a ``model`` artifact ``ticket-<run id>`` of the level's run.

A logger must never stop training: if W&B fails at any point (no network, no credentials, a
full disk, a bug), one line starting ``warning: W&B`` goes to stderr, the logger sends nothing
more in this process, and training goes on; the next run sends what W&B missed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lottery.atomic import atomic_write_text
from lottery.config import Config
from lottery.store import MAIN_BRANCH

# Seconds wandb.init may wait for W&B's server (online mode) before giving up; the
# environment variable WANDB_INIT_TIMEOUT, when set, takes its place.
INIT_TIMEOUT = 10.0

# Fields of summary.json that are not copied to the run summary: who the level is (in the
# run's config) and its timings (``timing.wall`` goes as ``wall_seconds``).
NOT_IN_SUMMARY = ("experiment", "hash", "dense_hash", "replicate", "level", "branch", "timing")

# W&B settings this logger sets unless their environment variable is set: quiet, and nothing
# W&B would collect besides our metrics (no console capture, system metrics, git, code or
# requirements snapshot).
QUIET_SETTINGS: dict[str, Any] = {
    "silent": True,
    "console": "off",
    "disable_git": True,
    "save_code": False,
    "x_save_requirements": False,
    "x_disable_stats": True,
}

SENT_DIR = "lottery-sent"
_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def _safe_part(text: str) -> str:
    """``text`` if it is W&B-id-safe and short, else a safe prefix and a hash of it."""
    if _SAFE.fullmatch(text) and len(text) <= 48:
        return text
    short = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', text)[:32]}_{short}"


def branch_of(summary: dict[str, Any], folder: Path | None) -> str:
    """The branch of a level or branch folder: ``imp`` for the main line, else the folder's
    ``<name>_<hash>`` (two settings of a branch name get two runs)."""
    if folder is not None and folder.name.startswith("branch_"):
        return folder.name.removeprefix("branch_")
    return str(summary.get("branch") or MAIN_BRANCH)


def run_id(digest: str, seed: int, level: int, branch: str = MAIN_BRANCH) -> str:
    """The W&B run id of one level (or branch) of one replicate: the same on every run."""
    rid = f"{digest}-r{seed}-L{level}"
    return rid if branch == MAIN_BRANCH else f"{rid}-{_safe_part(branch)}"


def wandb_root(cfg: Config) -> Path:
    """The folder given to ``wandb.init(dir=...)``: W&B's run folders go in its ``wandb/``.

    ``WANDB_DIR`` if set, else ``logger.dir`` (its parent when it is named ``wandb``, so the
    run folders go right in it), else ``<results_root>``.
    """
    if os.environ.get("WANDB_DIR"):
        return Path(os.environ["WANDB_DIR"]).expanduser().resolve()
    if cfg.logger.dir:
        folder = Path(cfg.logger.dir).expanduser().resolve()
        return folder.parent if folder.name == "wandb" else folder
    return Path(cfg.results_root).expanduser().resolve()


def wandb_dir(cfg: Config) -> Path:
    """The folder W&B's run folders go in (what ``wandb sync`` is given)."""
    root = wandb_root(cfg)
    return root / ".wandb" if (root / ".wandb").is_dir() else root / "wandb"  # as W&B does


def wandb_mode(cfg: Config) -> str:
    """``WANDB_MODE`` if set, else ``logger.mode``."""
    return os.environ.get("WANDB_MODE") or cfg.logger.mode


def _quiet_settings() -> dict[str, Any]:
    """:data:`QUIET_SETTINGS` but those whose environment variable is set (W&B reads it)."""
    chosen = {}
    for key, value in QUIET_SETTINGS.items():
        name = "WANDB__" + key[2:].upper() if key.startswith("x_") else "WANDB_" + key.upper()
        if name in os.environ or (key == "save_code" and "WANDB_DISABLE_CODE" in os.environ):
            continue
        chosen[key] = value
    return chosen


class WandbLogger:
    """A :class:`~lottery.logging.loggers.RunLogger` that copies finished levels to W&B.

    Nothing W&B happens until a level is sent, so building the logger costs nothing, and a
    run whose levels were all sent before does not start W&B at all. Every W&B call goes
    through :meth:`_guard`: the first failure warns once and turns the logger off.
    """

    def __init__(self, cfg: Config, digest: str) -> None:
        self.cfg = cfg
        self.digest = digest
        self.mode = wandb_mode(cfg)
        self.project = os.environ.get("WANDB_PROJECT") or cfg.logger.project
        self.entity = os.environ.get("WANDB_ENTITY") or cfg.logger.entity
        self.root = wandb_root(cfg)
        self.dir = wandb_dir(cfg)
        self.artifacts = bool(getattr(cfg.logger, "artifacts", False))
        self.run: Any = None
        self.failed = False
        self.offline_runs: list[str] = []  # sync folders written by this process

    @property
    def offline(self) -> bool:
        return self.mode in ("offline", "dryrun")

    # -- exactly once --------------------------------------------------------------------

    def marker(self, rid: str) -> Path:
        """The file that says the run ``rid`` was sent (or written offline) in full."""
        where = self.dir / SENT_DIR
        if self.entity:
            where = where / _safe_part(self.entity)
        return where / _safe_part(self.project or "uncategorized") / f"{rid}.json"

    def _drop_cut_off_offline_runs(self, rid: str) -> None:
        """Delete the offline run folders of ``rid`` left by a run that was cut off.

        W&B offline mode ignores ``resume``: ``wandb.init`` with an id that already has an
        offline folder opens a second folder (``offline-run-<time>-<id>``) beside it, and
        ``wandb sync`` would upload both, so the level's history would reach W&B twice. The
        store holds the whole level, so the cut-off copy is deleted and the level sent again
        in full as a fresh run with the same id. (Online, the server keeps what it got: see
        :meth:`_send`.)
        """
        pattern = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(rid)}")
        for folder in self.dir.glob(f"offline-run-*-{rid}"):
            if pattern.fullmatch(folder.name):
                shutil.rmtree(folder, ignore_errors=True)

    # -- W&B calls, guarded -------------------------------------------------------------

    def _warn(self, error: BaseException) -> None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        if len(reason) > 200:
            reason = reason[:197] + "..."
        print(
            f"warning: W&B logging stopped ({reason}); results still go to the local store, "
            "and the next run sends what W&B missed",
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

    def _init(self, summary: dict[str, Any], rid: str, branch: str) -> Any:
        import wandb

        level, seed = int(summary["level"]), int(summary.get("replicate", self.cfg.seed))
        digest = summary.get("hash") or self.digest
        name = f"{self.cfg.name}-{digest}-r{seed}-L{level}"
        if branch != MAIN_BRANCH:
            name += f"-{branch}"
        config = asdict(self.cfg)
        config.update(
            hash=digest,
            level=level,
            weights_remaining_pct=summary["weights_remaining_pct"],
            branch=summary.get("branch") or MAIN_BRANCH,  # as in curve.csv and load_results
            seed=seed,
        )
        settings = _quiet_settings()
        if "silent" in settings:
            # W&B prints some lines (credentials found, ...) unless its *global* settings are
            # silent: set them before the first run of the process (W&B's setup reads them).
            wandb.setup(wandb.Settings(silent=True))
        # Read here, not by W&B: W&B reads its environment once per process.
        settings["init_timeout"] = float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT))
        self.root.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=self.project,
            entity=self.entity,
            group=f"{self.cfg.name}/{digest}",
            job_type=f"replicate_{seed}",
            name=name,
            id=rid,
            # Online, a run cut off earlier is resumed (see _send); offline ignores resume.
            resume=None if self.offline else "allow",
            config=config,
            dir=str(self.root),
            mode=self.mode,
            reinit="create_new",  # leaves any run of the caller's alone
            settings=wandb.Settings(**settings),
        )

    def _send(self, summary: dict[str, Any], folder: Path, rid: str, branch: str) -> None:
        records = [
            json.loads(line)
            for line in (folder / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        self._drop_cut_off_offline_runs(rid)
        run = self.run = self._init(summary, rid, branch)
        run.define_metric("iteration")
        for prefix in ("train", "val", "test"):
            run.define_metric(f"{prefix}/*", step_metric="iteration")
        # Online, a resumed run already holds its first ``starting_step`` rows (one W&B step
        # per record, in the store's order): send only the rest, so each row arrives once.
        done = run.starting_step if run.resumed else 0
        for record in records[done:]:
            run.log(record)
        results = {
            k: v for k, v in summary.items() if k not in NOT_IN_SUMMARY and v is not None
        }
        wall = (summary.get("timing") or {}).get("wall")
        if wall is not None:
            results["wall_seconds"] = wall
        run.summary.update(results)
        if self.artifacts:
            self._log_artifact(run, folder, rid, summary)
        sync_dir = run.settings.sync_dir
        self.run = None
        run.finish()
        marker = {
            "run_id": rid,
            "mode": self.mode,
            "project": self.project,
            "entity": self.entity,
            "sync_dir": sync_dir,
            "rows": len(records),
        }
        atomic_write_text(self.marker(rid), json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if self.offline:
            self.offline_runs.append(sync_dir)

    def _log_artifact(self, run: Any, folder: Path, rid: str, summary: dict[str, Any]) -> None:
        import wandb

        keys = ("level", "replicate", "weights_remaining_pct", "test_accuracy")
        artifact = wandb.Artifact(
            f"ticket-{rid}",
            type="model",
            description=f"mask and weights of {folder}",
            metadata={"hash": summary.get("hash"), **{k: summary.get(k) for k in keys}},
        )
        for name in ("mask.npz", "params.npz"):
            artifact.add_file(str(folder / name), name=name)
        run.log_artifact(artifact)

    # -- the RunLogger interface -------------------------------------------------------

    def begin_level(self, level: int, weights_remaining_pct: float) -> None:
        """Nothing: a level goes to W&B when it is finished (the console shows progress)."""

    def log_eval(self, level: int, record: dict[str, float]) -> None:
        """Nothing: the level's history goes to W&B from ``metrics.jsonl`` when finished."""

    def log_level(self, summary: dict[str, Any], folder: Path) -> None:
        """Send a finished level (or branch) unless its W&B run was sent in full before."""
        if self.failed or self.mode == "disabled":
            return
        folder = Path(folder)
        branch = branch_of(summary, folder)
        seed = int(summary.get("replicate", self.cfg.seed))
        rid = run_id(summary.get("hash") or self.digest, seed, int(summary["level"]), branch)
        if self.marker(rid).is_file():
            return
        self._guard(self._send, summary, folder, rid, branch)

    def finish(self, rows: list[dict[str, Any]]) -> None:
        """Say how to upload the offline runs this process wrote, if any."""
        if self.offline_runs:
            n = len(self.offline_runs)
            print(
                f"W&B: {n} offline run{'s' if n > 1 else ''} in {self.dir}; "
                f"upload with `wandb sync {self.dir}`",
                flush=True,
            )
