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
