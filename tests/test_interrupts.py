"""Ctrl-C is never lost, even when its KeyboardInterrupt lands where Python swallows it (a
garbage-collector callback, such as JAX's, or a ``__del__``)."""

import os
import signal
import time

import pytest

from lottery import experiment, interrupts
from lottery.pruning import full_mask
from lottery.train import UpdateMask

from conftest import make_config


class PressesCtrlCWhenCollected:
    """Sends SIGINT to this process from ``__del__``: the KeyboardInterrupt is raised there
    (the sleep lets the handler run) and Python prints "Exception ignored" and goes on."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)


def press_ctrl_c_where_it_is_swallowed() -> None:
    PressesCtrlCWhenCollected()  # collected at once


@pytest.fixture
def python_sigint_handler():
    """The handler Python installs at start-up (a background job may have SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_swallowed_ctrl_c_is_raised_at_the_next_check(python_sigint_handler):
    with interrupts.caught():
        press_ctrl_c_where_it_is_swallowed()  # no KeyboardInterrupt here
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_requested()
        interrupts.raise_if_requested()  # the raise cleared the request
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.caught():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_training_stops_at_the_stretch_after_a_swallowed_ctrl_c(
    python_sigint_handler, tmp_path, digits_overrides
):
    plan = experiment.prepare(make_config(digits_overrides, tmp_path))
    trainer = experiment.Experiment(plan).trainer
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))

    def ctrl_c_at_step_50(run, trainer):
        press_ctrl_c_where_it_is_swallowed()
        return run.mask

    with interrupts.caught(), pytest.raises(KeyboardInterrupt):
        trainer.train(run, 200, [UpdateMask([50, 100], ctrl_c_at_step_50)])
    assert run.step == 100  # the stretch from 50 to 100 ran, then it stopped


# -- preemption: SIGTERM and submitit's SIGUSR2 --------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_a_preemption_signal_saves_the_step_reached_and_stops(
    python_sigint_handler, tmp_path, digits_overrides, signum
):
    """The signal arrives inside a hook at step 50 (between checkpoints every 1000 steps);
    the loop saves step 50 and raises Preempted there, and the handlers are restored after."""
    from lottery.train import Checkpoint
    from lottery.train.checkpoint import Checkpointer

    plan = experiment.prepare(make_config(digits_overrides, tmp_path))
    trainer = experiment.Experiment(plan).trainer
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=3)

    def signal_at_step_50(run, trainer):
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs: it only leaves the request
        return run.mask

    before = signal.getsignal(signum)
    with interrupts.caught(), pytest.raises(interrupts.Preempted) as stopped:
        hooks = [UpdateMask([50], signal_at_step_50), Checkpoint(checkpointer, every_steps=1000)]
        trainer.train(run, 200, hooks)
    assert (stopped.value.signum, stopped.value.step, run.step) == (signum, 50, 50)
    assert checkpointer.manager.all_steps() == [50]
    restored = checkpointer.restore_latest(run)
    assert restored.step == 50
    checkpointer.close()
    assert signal.getsignal(signum) is before


def test_a_preemption_signal_in_a_garbage_collector_callback_is_not_lost(python_sigint_handler):
    """Where Python would swallow an exception the handler raises nothing anyway: it only
    leaves the request, which the next check raises."""

    class SendsSigtermWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)

    with interrupts.caught():
        SendsSigtermWhenCollected()
        assert interrupts.preemption_requested()
        with pytest.raises(interrupts.Preempted):
            interrupts.raise_if_preempted()
        with pytest.raises(interrupts.Preempted):  # a second signal: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    assert not interrupts.preemption_requested()


def test_hand_back_calls_the_replaced_handler_then_exits_with_the_signal():
    """Under submitit, USR2's handler requeues the job and exits: hand_back calls it once
    the run's state is saved; without one, the exit status is 128 + the signal."""
    calls = []

    def submitits_handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGUSR2, submitits_handler)
    try:
        with interrupts.caught():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            assert calls == []  # only the request so far
            with pytest.raises(interrupts.Preempted) as stopped:
                interrupts.raise_if_preempted(step=7)
        assert signal.getsignal(signal.SIGUSR2) is submitits_handler
        with pytest.raises(SystemExit) as exited:
            interrupts.hand_back(stopped.value)
        assert calls == [signal.SIGUSR2]
        assert exited.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_a_stretch_of_single_steps_stops_between_two_and_resumes_to_the_same_bits(
    python_sigint_handler, tmp_path, monkeypatch
):
    """A convolutional network on the CPU calls one step at a time: the signal, arriving
    before step 37 of a 60-step stretch, stops it there (not at its end) with a checkpoint
    of step 37; a fresh trainer resumed from it ends the stretch with the uninterrupted
    run's weights and training loss, bit for bit."""
    import jax
    import numpy as np

    from lottery import models
    from lottery.config import ModelConfig, OptimizerConfig
    from lottery.data.dataset import Dataset, Split
    from lottery.train import Checkpoint, Trainer
    from lottery.train.checkpoint import Checkpointer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 16, 16, 3)).astype(np.float32)
    y = (np.arange(96) % 10).astype(np.int32)
    data = Dataset("toy", Split(x[:64], y[:64]), Split(x[64:80], y[64:80]),
                   Split(x[80:], y[80:]), 10)
    network = models.build(ModelConfig(name="conv2", width=4), (16, 16, 3), 10)
    params, stats = jax.device_get(network.init(jax.random.key(0)))

    def trainer():
        return Trainer(network, data, OptimizerConfig(name="adam", lr=1e-3), batch_size=16,
                       total_steps=60, steps_per_epoch=4, eval_batch_size=16, data_seed=0)

    reference = trainer()
    assert reference.feed.one_step_per_call
    uninterrupted = reference.train(reference.start(0, params, stats, full_mask(params)), 60)

    asked = []
    really_requested = interrupts.preemption_requested

    def signal_before_step_37():
        asked.append(len(asked))
        if len(asked) == 38:  # asked before each step: the 38th is before step 37
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        return really_requested()

    monkeypatch.setattr(interrupts, "preemption_requested", signal_before_step_37)
    stopped = trainer()
    run = stopped.start(0, params, stats, full_mask(params))
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=2)
    with interrupts.caught(), pytest.raises(interrupts.Preempted) as raised:
        stopped.train(run, 60, [Checkpoint(checkpointer, every_steps=1000)])
    assert raised.value.step == 37 and checkpointer.manager.all_steps() == [37]
    monkeypatch.setattr(interrupts, "preemption_requested", really_requested)

    resumed = trainer()
    template = resumed.start(0, params, stats, full_mask(params))
    restored = checkpointer.restore_latest(template)
    checkpointer.close()
    unfinished = restored.unfinished
    assert (restored.step, unfinished.start, len(unfinished.losses)) == (37, 0, 37)
    finished = resumed.train(restored, 60)
    assert finished.unfinished is None
    assert finished.loss_sum == uninterrupted.loss_sum and finished.loss_steps == 60
    for a, b in zip(jax.tree.leaves(jax.device_get(finished.state)),
                    jax.tree.leaves(jax.device_get(uninterrupted.state)), strict=True):
        np.testing.assert_array_equal(a, b)
