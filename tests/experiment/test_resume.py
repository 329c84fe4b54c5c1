"""Resume inside a level (invariant 4): SIGKILL at any moment, start again, same results.

Each killed run is the real command line in a subprocess that sends itself SIGKILL at a
chosen moment (no cleanup of any kind runs); the same command is then run again, and the
store must equal, bit for bit, the store of a run that was never interrupted.
"""

import signal
import subprocess
import sys

import numpy as np
import pytest

from lottery.train import Trainer
from lottery.train.checkpoint import Checkpointer

from conftest import make_config, run_cli
from conftest import store_contents as conftest_store_contents

# Level 0 rewinds to step 50 and is checkpointed every 75 steps (of 300), so that most
# checkpoints lie between two evaluations (every 50): a run resumed from one must evaluate at
# the uninterrupted run's steps only. Each pruned level has a branch (random_reinit), resumed
# like a level.
# One worker for the module: the uninterrupted reference run is made once.
pytestmark = pytest.mark.xdist_group("resume")

RESUMABLE = [
    "dataset=digits",
    "model.hidden=[64,32]",
    "train.steps=300it",
    "train.batch_size=50",
    "train.eval_every=50it",
    "train.checkpoint_every=75it",
    "pruning.levels=2",
    "pruning.rewind_step=50it",
    "progress=false",
    "branches=[random_reinit]",
]

# Runs ``python -m lottery ARGS`` after arranging a SIGKILL of itself at MOMENT.
KILLER = """
import os, signal, sys
moment = sys.argv[1]
sys.argv = ["lottery", *sys.argv[2:]]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "level_0_step_150":  # inside level 0, after the checkpoint at step 75
    from lottery.train import hooks
    evaluate = hooks.Evaluate.__call__
    def killing_evaluate(self, run, trainer):
        evaluate(self, run, trainer)
        if trainer.stream == 0 and run.step == 150:
            die()
    hooks.Evaluate.__call__ = killing_evaluate
elif moment == "branch_step_150":  # inside level 1's first branch (random_reinit)
    from lottery.train import hooks
    evaluate = hooks.Evaluate.__call__
    hits = []
    def killing_evaluate(self, run, trainer):
        evaluate(self, run, trainer)
        if trainer.stream == 1 and run.step == 150:
            hits.append(run.step)
            if len(hits) == 2:  # the level itself first, then its branch
                die()
    hooks.Evaluate.__call__ = killing_evaluate
elif moment == "checkpoint_write":  # level 1's checkpoint at step 150: written, not committed
    from orbax.checkpoint._src.path import atomicity  # private: where orbax commits
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def killing_finalize(self, *args, **kwargs):
        if "level_1.partial" in str(self._final_path) and self._final_path.name == "150":
            die()
        return await finalize(self, *args, **kwargs)
    atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize
elif moment == "publish":  # level 2 entirely written, before its folder is renamed
    from lottery.store import results
    publish = results.PartialFolder.publish
    def killing_publish(self):
        if self.final.name == "level_2":
            die()
        publish(self)
    results.PartialFolder.publish = killing_publish

elif moment.startswith("SIG"):  # SIGNAL_LEVEL_STEP: the scheduler stopping the job there
    name, level, step = moment.split("_")
    from lottery.train import hooks
    evaluate = hooks.Evaluate.__call__
    def signalling_evaluate(self, run, trainer):
        evaluate(self, run, trainer)
        if trainer.stream == int(level) and run.step == int(step):
            os.kill(os.getpid(), getattr(signal, name))
    hooks.Evaluate.__call__ = signalling_evaluate

import runpy
runpy.run_module("lottery", run_name="__main__", alter_sys=True)
"""


def store_contents(root):
    """The store's result files (config.yaml aside: it records results_root)."""
    return conftest_store_contents(root, frozenset({"config.yaml"}))


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli([*RESUMABLE, f"results_root={root}"], cwd=root)
    assert result.returncode == 0, result.stderr
    return store_contents(root)


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment", ["level_0_step_150", "branch_step_150", "checkpoint_write", "publish"]
)
def test_sigkill_then_rerun_gives_the_uninterrupted_store(tmp_path, uninterrupted, moment):
    args = [*RESUMABLE, f"results_root={tmp_path}"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, moment, *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list(tmp_path.rglob("*.partial")), "the kill should leave an unfinished level"

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    if moment == "level_0_step_150":
        assert "level 0: resuming from step 75" in again.stdout
    if moment == "branch_step_150":
        assert "level 1 random_reinit: resuming from step 75" in again.stdout
    if moment == "checkpoint_write":
        assert "level 1: resuming from step 75" in again.stdout  # 150 was never committed
    assert store_contents(tmp_path) == uninterrupted
    leftovers = [
        p for p in tmp_path.rglob("*")
        if p.name.endswith(".partial") or "tmp" in p.name or p.name == "checkpoints"
    ]
    assert leftovers == []


def test_an_unreadable_checkpoint_is_skipped_for_the_one_before(tmp_path, digits_overrides,
                                                                capsys):
    from lottery.experiment import prepare
    from lottery.pruning import full_mask

    plan = prepare(make_config(digits_overrides, tmp_path))
    trainer = Trainer(
        plan.network, plan.dataset, plan.cfg.optimizer, batch_size=50,
        total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch,
        eval_batch_size=100, data_seed=0,
    )
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=3)
    trainer.train(run, 50)
    run.history.append({"iteration": 50})
    checkpointer.save(run)
    saved_at_50 = jax_to_numpy(run.state.params)
    trainer.train(run, 100)
    checkpointer.save(run)
    checkpointer.close()
    for file in (tmp_path / "checkpoints" / "100").rglob("*"):
        if file.is_file() and file.stat().st_size > 0:
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])

    template = trainer.start(0, plan.init_params, plan.init_batch_stats,
                             full_mask(plan.init_params))
    restored = Checkpointer(tmp_path / "checkpoints", keep=3).restore_latest(template)
    assert restored is not None and restored.step == 50
    assert restored.history == [{"iteration": 50}]
    for path, value in saved_at_50.items():
        np.testing.assert_array_equal(np.asarray(restored.state.params[path[0]][path[1]]), value)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "checkpoint" in warning[0] and "/100" in warning[0]


def jax_to_numpy(params):
    return {(layer, name): np.asarray(v) for layer, leaves in params.items()
            for name, v in leaves.items()}



@pytest.mark.slow
@pytest.mark.parametrize("signal_name, level", [("SIGTERM", 0), ("SIGUSR2", 1)])
def test_a_stopped_job_saves_the_step_it_reached_and_resumes_from_it(
    tmp_path, uninterrupted, signal_name, level
):
    """SIGTERM (Slurm requeueing or preempting the job) and SIGUSR2 (submitit's warning
    before the time limit) at step 100, between the checkpoints of 75 and 150: the run saves
    a checkpoint of step 100 at once, says so in one line and exits 128 + the signal; the
    same command resumes from step 100 and ends in the uninterrupted store."""
    args = [*RESUMABLE, f"results_root={tmp_path}"]
    stopped = subprocess.run(
        [sys.executable, "-c", KILLER, f"{signal_name}_{level}_100", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    signum = getattr(signal, signal_name)
    assert stopped.returncode == 128 + signum, stopped.stderr[-2000:]
    line = (
        f"stopped by {signal_name} at level {level} step 100: saved a checkpoint of step 100; "
        "run the same command to resume"
    )
    assert line in stopped.stderr
    assert "Traceback" not in stopped.stderr
    partial = tmp_path.rglob(f"level_{level}.partial/checkpoints/*")
    assert sorted(p.name for p in partial if p.name.isdigit()) == ["100", "75"]

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"level {level}: resuming from step 100" in again.stdout
    assert store_contents(tmp_path) == uninterrupted
