"""Weights & Biases: one W&B run per level (and branch), logged live, completed from the store.

``logger=wandb`` (``conf/logger/wandb.yaml``) logs to W&B beside the local store, offline by
default: W&B writes its run folders under ``logger.dir`` (default ``<results_root>/wandb``)
and ``wandb sync <dir>`` uploads them later. The store is the record; W&B is filled from it.

* One run per level or branch, opened when it starts training (:meth:`WandbLogger.
  begin_level`): the rows the store holds already (a resumed level), then each evaluation as
  it happens (``iteration``, ``train/loss``, ``val/*``, ``test/*``; ``iteration`` is their
  step metric), with W&B's system metrics and console capture. When the level is finished
  (:meth:`log_level`) any row not logged yet, its ``summary.json`` in the run summary
  (``wall_seconds`` for ``timing.wall``), ``finish``, and a marker.
* Name ``<name>/<method>/L<level> <weights left>%`` (`` <branch>`` for a branch), group
  ``<name>`` and the command-line overrides that change results (``<name> #<hash>``
  outside a Hydra job), job type ``level``, tag ``seed=<seed>``, notes with the hash, config
  = the resolved config plus ``hash``, ``level``, ``weights_remaining_pct``, ``branch``,
  ``seed``; run id ``<hash>-r<seed>-L<level>[-<branch>]`` (:func:`run_id`).
* A summary run per experiment, id ``<hash>-curve``, written again whole after each level
  and at the end when the curve changed: a ``curve`` table (curve.csv aggregated over
  replicates, :func:`~lottery.logging.wandb_curve.aggregate_curve`), a line series of it per
  branch (``sparsity_accuracy``), and ``test/accuracy`` (the sparsest main-line level's mean).
* Under ``wandb agent`` (``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID`` set) the agent's run is the
  summary run, with the sweep point in its config; the level runs are opened outside the
  sweep (:func:`outside_sweep`), so each level still gets its own run.

*Exactly once.* A finished run's marker ``<W&B dir>/lottery-sent/[<entity>/]<project>/<run
id>.json`` makes later runs skip it (delete markers to send again). A run cut off (SIGKILL,
Ctrl-C, a W&B error: no marker) is written again: offline, its cut-off folder is deleted and
the run written in full from the store (W&B's offline mode cannot resume, and its service
buffers its file, so a kill loses what it held); online, the run is resumed and gets only the
rows the server lacks (``starting_step``).

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lottery.atomic import atomic_write_text
from lottery.config import Config
from lottery.logging.wandb_curve import curve_media, readable_group, sparsest_accuracy
from lottery.store import MAIN_BRANCH, ExperimentStore
from lottery.store.files import MASK_FILE, METRICS_FILE, PARAMS_FILE
from lottery.store.results import CURVE_COLUMNS

# Seconds wandb.init may wait for W&B's server (online mode) before giving up; the
# environment variable WANDB_INIT_TIMEOUT, when set, takes its place.
INIT_TIMEOUT = 10.0

# Fields of summary.json that are not copied to the run summary: who the level is (in the
# run's config) and its timings (``timing.wall`` goes as ``wall_seconds``).
NOT_IN_SUMMARY = ("experiment", "hash", "dense_hash", "replicate", "level", "branch", "timing")

# W&B settings this logger sets unless their environment variable is set: quiet, and no git,
# code or requirements snapshot. System metrics and console capture stay on, as W&B's
# defaults (WANDB_CONSOLE=off, WANDB__DISABLE_STATS=true turn them off).
QUIET_SETTINGS: dict[str, Any] = {
    "silent": True,
    "disable_git": True,
    "save_code": False,
    "x_save_requirements": False,
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


@dataclass
class AgentRun:
    """The run a ``wandb agent`` started this process for (its environment variables)."""

    sweep_id: str
    run_id: str
    param_path: str | None

    @classmethod
    def from_environment(cls) -> AgentRun | None:
        sweep_id, rid = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
        if not sweep_id or not rid:
            return None
        return cls(sweep_id, rid, os.environ.get("WANDB_SWEEP_PARAM_PATH"))

    def parameters(self) -> dict[str, Any]:
        """The sweep point (``{"pruning.fraction": 0.5, "seed": 1}``), as the agent wrote it."""
        if not self.param_path or not Path(self.param_path).is_file():
            return {}
        from wandb.sdk.lib import config_util

        return dict(config_util.dict_from_config_file(self.param_path, must_exist=True) or {})


@contextlib.contextmanager
def outside_sweep() -> Iterator[None]:
    """W&B, under an agent, gives every ``wandb.init`` of the process the agent's run id and
    sweep (it ignores ``id=``), so every level would be written into one run. While this is
    open, W&B's process settings hold no sweep, run id or sweep parameters, and a level's
    ``wandb.init`` makes the level's own run; the agent's run is the summary run."""
    import wandb

    settings = wandb.setup().settings
    keys = ("sweep_id", "run_id", "sweep_param_path")
    saved = {key: getattr(settings, key) for key in keys}
    try:
        for key in keys:
            setattr(settings, key, None)
        yield
    finally:
        for key, value in saved.items():
            setattr(settings, key, value)


@dataclass
class LiveRun:
    """The W&B run of the level training now: rows are counted in the store's order, and
    the first ``skip`` (those a resumed online run already holds) are not sent again."""

    rid: str
    run: Any
    skip: int
    seen: int = 0

    def log(self, record: dict[str, Any]) -> None:
        if self.seen >= self.skip:
            self.run.log(record)
        self.seen += 1


class WandbLogger:
    """A :class:`~lottery.logging.loggers.RunLogger` that logs each level to W&B as it
    trains and completes it from the store when it is finished.

    Building the logger costs nothing, and a run whose levels were all sent before does not
    start W&B at all. Every W&B call goes through :meth:`_guard`: the first failure warns
    once and turns the logger off.
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
        self.agent = AgentRun.from_environment()
        self.group = readable_group(cfg, digest)
        self.live: LiveRun | None = None
        self.failed = False
        self.offline_runs: list[str] = []  # sync folders written by this process

    @property
    def offline(self) -> bool:
        return self.mode in ("offline", "dryrun")

    @property
    def summary_id(self) -> str:
        """The summary run's id: the agent's run under ``wandb agent``, else per experiment."""
        return self.agent.run_id if self.agent else f"{self.digest}-curve"

    # -- exactly once --------------------------------------------------------------------

    def marker(self, rid: str) -> Path:
        """The file that says the run ``rid`` was sent (or written offline) in full."""
        where = self.dir / SENT_DIR
        if self.entity:
            where = where / _safe_part(self.entity)
        return where / _safe_part(self.project or "uncategorized") / f"{rid}.json"

    def _write_marker(self, rid: str, run: Any, **fields: Any) -> None:
        marker = {"run_id": rid, "mode": self.mode, "project": self.project,
                  "entity": self.entity, "sync_dir": run.settings.sync_dir, **fields}
        atomic_write_text(self.marker(rid), json.dumps(marker, indent=2, sort_keys=True) + "\n")

    def _drop_cut_off_offline_runs(self, rid: str) -> None:
        """Delete the offline run folders of ``rid`` left by an earlier, unfinished copy.

        W&B offline mode ignores ``resume``: ``wandb.init`` with an id that already has an
        offline folder opens a second folder (``offline-run-<time>-<id>``) beside it, and
        ``wandb sync`` would upload both, so rows would reach W&B twice. The store holds the
        whole level (and the whole curve), so the cut-off copy is deleted and the run written
        again in full with the same id. (Online, the server keeps what it got: see
        :meth:`_open`.)
        """
        if not self.offline:
            return
        pattern = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(rid)}(-\d+)?")
        for folder in self.dir.glob(f"offline-run-*-{rid}*"):
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
            live, self.live = self.live, None
            if live is not None:
                with contextlib.suppress(Exception):
                    live.run.finish(exit_code=1)
            return None

    def _init(self, rid: str, name: str, config: dict[str, Any], **extra: Any) -> Any:
        """``wandb.init`` of run ``rid``, resumed online (offline ignores resume)."""
        import wandb

        settings = _quiet_settings()
        if "silent" in settings:
            # W&B prints some lines (credentials found, ...) unless its *global* settings are
            # silent: set them before the first run of the process (W&B's setup reads them).
            wandb.setup(wandb.Settings(silent=True))
            # An earlier setup of this process (another run's) is only updated by that call,
            # which leaves W&B's terminal logging as it was: set it too.
            wandb.termsetup(wandb.Settings(silent=True), None)
        # Read here, not by W&B: W&B reads its environment once per process.
        settings["init_timeout"] = float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT))
        self.root.mkdir(parents=True, exist_ok=True)
        self._drop_cut_off_offline_runs(rid)
        run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group,
            name=name,
            id=rid,
            resume=None if self.offline else "allow",
            config=config,
            notes=f"experiment hash {self.digest}",
            dir=str(self.root),
            mode=self.mode,
            reinit="create_new",  # leaves any run of the caller's alone
            settings=wandb.Settings(**settings, **extra.pop("settings", {})),
            **extra,
        )
        if run.id != rid:  # never record another run as this one's
            run.finish(exit_code=1)
            raise RuntimeError(f"W&B opened run {run.id!r} instead of {rid!r}")
        return run

    def _level_names(self, level: int, pct: float, branch: str) -> tuple[str, str]:
        """The run id and display name ``<name>/<method>/L<level> <weights left>%``."""
        seed = self.cfg.seed
        name = f"{self.cfg.name}/{self.cfg.pruning.method}/L{level} {pct:.3g}%"
        if branch != MAIN_BRANCH:
            name += f" {branch.rsplit('_', 1)[0]}"
        return run_id(self.digest, seed, level, branch), name

    def _open(self, level: int, pct: float, branch: str, branch_label: str) -> LiveRun:
        """Start (or, online, resume) the W&B run of a level or branch."""
        rid, name = self._level_names(level, pct, branch)
        config = asdict(self.cfg)
        config.update(hash=self.digest, level=level, weights_remaining_pct=pct,
                      branch=branch_label, seed=self.cfg.seed)
        with outside_sweep():
            run = self._init(rid, name, config, job_type="level", tags=[f"seed={self.cfg.seed}"])
        run.define_metric("iteration")
        for prefix in ("train", "val", "test"):
            run.define_metric(f"{prefix}/*", step_metric="iteration")
        # Online, a resumed run already holds its first ``starting_step`` rows (one W&B step
        # per record, in the store's order): those are not sent again.
        return LiveRun(rid, run, run.starting_step if run.resumed else 0)

    def _begin(self, level: int, pct: float, folder: Path) -> None:
        branch = branch_of({}, folder)
        label = MAIN_BRANCH if branch == MAIN_BRANCH else branch.rsplit("_", 1)[0]
        live = self.live = self._open(level, pct, branch, label)
        partial = folder.with_name(folder.name + ".partial") / METRICS_FILE
        for record in _records(partial):  # what the store holds already (a resumed level)
            live.log(record)

    def _finish_level(self, summary: dict[str, Any], folder: Path, rid: str, branch: str) -> None:
        """Complete the level's run from the store (every row not logged live, the summary,
        the artifact), finish it and write its marker."""
        records = _records(folder / METRICS_FILE)
        live, self.live = self.live, None
        if live is None or live.rid != rid:
            level, pct = int(summary["level"]), summary["weights_remaining_pct"]
            label = summary.get("branch") or MAIN_BRANCH  # as in curve.csv and load_results
            live = self._open(level, pct, branch, label)
            self.live = live
        for record in records[live.seen:]:
            live.log(record)
        run = live.run
        results = {
            k: v for k, v in summary.items() if k not in NOT_IN_SUMMARY and v is not None
        }
        wall = (summary.get("timing") or {}).get("wall")
        if wall is not None:
            results["wall_seconds"] = wall
        run.summary.update(results)
        if self.artifacts:
            self._log_artifact(run, folder, rid, summary)
        self.live = None
        run.finish()
        self._write_marker(rid, run, rows=len(records))
        if self.offline:
            self.offline_runs.append(run.settings.sync_dir)

    def _log_artifact(self, run: Any, folder: Path, rid: str, summary: dict[str, Any]) -> None:
        import wandb

        keys = ("level", "replicate", "weights_remaining_pct", "test_accuracy")
        artifact = wandb.Artifact(
            f"ticket-{rid}",
            type="model",
            description=f"mask and weights of {folder}",
            metadata={"hash": summary.get("hash"), **{k: summary.get(k) for k in keys}},
        )
        for name in (MASK_FILE, PARAMS_FILE):
            artifact.add_file(str(folder / name), name=name)
        run.log_artifact(artifact)

    # -- the summary run -----------------------------------------------------------------

    def _curve_rows(self) -> list[dict[str, Any]]:
        """curve.csv's rows as the store would write them now (every finished summary)."""
        store = ExperimentStore(self.cfg.results_root, self.cfg.name, self.digest)
        return [{c: s.get(c) for c in CURVE_COLUMNS} for s in store.summaries()]

    def _send_curve(self, rows: list[dict[str, Any]]) -> None:
        """Write the summary run again, whole, unless it already holds these rows."""
        rid = self.summary_id
        marker = self.marker(rid)
        clean = json.loads(json.dumps(rows, default=str))
        if marker.is_file() and json.loads(marker.read_text()).get("curve") == clean:
            return
        config = {**asdict(self.cfg), "hash": self.digest}
        extra: dict[str, Any] = {"job_type": "summary"}
        if self.agent:  # the agent's run: its sweep, and the sweep point in its config
            config.update(self.agent.parameters())
            extra["settings"] = {"sweep_id": self.agent.sweep_id}
        run = self._init(rid, f"{self.cfg.name} curve", config, **extra)
        run.log(curve_media(rows, f"{self.group}: test accuracy vs. weights remaining"))
        accuracy = sparsest_accuracy(rows)
        if accuracy is not None:
            run.summary["test/accuracy"] = accuracy  # the sweep file's metric
        run.finish()
        self._write_marker(rid, run, curve=clean)
        if self.offline:
            self.offline_runs.append(run.settings.sync_dir)

    # -- the RunLogger interface -------------------------------------------------------

    def begin_level(self, level: int, weights_remaining_pct: float,
                    folder: Path | None = None) -> None:
        """Open the W&B run of the level (or branch) whose finished folder will be
        ``folder`` and send what the store holds of it so far (a resumed level)."""
        if self.failed or self.mode == "disabled" or folder is None:
            return
        rid, _ = self._level_names(level, weights_remaining_pct, branch_of({}, Path(folder)))
        if self.marker(rid).is_file():
            return  # sent in full before (a level redone after being set aside)
        self._guard(self._begin, level, weights_remaining_pct, Path(folder))

    def log_eval(self, level: int, record: dict[str, float]) -> None:
        """One evaluation, to the level's run at once."""
        if self.live is not None:
            self._guard(self.live.log, record)

    def log_level(self, summary: dict[str, Any], folder: Path) -> None:
        """Complete a finished level (or branch) unless its W&B run was sent in full before;
        then refresh the summary run."""
        if self.failed or self.mode == "disabled":
            return
        folder = Path(folder)
        branch = branch_of(summary, folder)
        rid = run_id(self.digest, self.cfg.seed, int(summary["level"]), branch)
        if not self.marker(rid).is_file():
            self._guard(self._finish_level, summary, folder, rid, branch)
        if not self.failed:
            self._guard(self._send_curve, self._curve_rows())

    def finish(self, rows: list[dict[str, Any]]) -> None:
        """Refresh the summary run with the final curve; say how to upload offline runs."""
        if not (self.failed or self.mode == "disabled"):
            self._guard(self._send_curve, rows)
        if self.offline_runs:
            n = len(set(self.offline_runs))
            print(
                f"W&B: {n} offline run{'s' if n > 1 else ''} in {self.dir}; "
                f"upload with `wandb sync {self.dir}`",
                flush=True,
            )


def _records(file: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl ([] when there is none yet)."""
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
