"""Ctrl-C and preemption that are never lost.

Python raises ``KeyboardInterrupt`` in whatever code the main thread runs when SIGINT
arrives. When that code is a garbage-collector callback (JAX registers one, and a train step
makes garbage), Python prints "Exception ignored in: <function _xla_gc_callback ...>" and goes
on: the run went on training as if nothing had been pressed (about one Ctrl-C in ten on the
default experiment: docs/benchmarks.md, "Design measurements"). Within :func:`caught`,
SIGINT leaves a flag, and raises at once unless it arrived where Python would swallow the
raise; the training loop calls :func:`raise_if_requested` between stretches, which raises
it there, within one evaluation interval.

A scheduler stopping the job is the other interruption. Slurm sends SIGTERM when it requeues
or preempts a job (and SIGKILL ``KillWait`` seconds later); submitit asks for SIGUSR2 shortly
before the time limit and, on it, requeues the job and exits. Left alone, SIGTERM was ignored
(submitit's handler) or killed the run at once, and submitit's exit could land in JAX's
garbage-collector callback and be swallowed: either way the work since the last checkpoint
was lost, every time. Within :func:`caught` both signals only leave a request: the training
loop, at the end of the stretch it is in, saves a checkpoint of that step and raises
:class:`Preempted`; the command then hands the signal back (:func:`hand_back`) to what would
have handled it (submitit requeues the job), and exits.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

_requested = threading.Event()

# The preemption signal received within caught() (None: none), and the handlers it replaced.
_preemption: int | None = None
_replaced: dict[int, Any] = {}


class Preempted(BaseException):
    """The job is being stopped by its scheduler (or a ``kill``): training saved its state at
    ``step`` (None: between levels, nothing unsaved) and unwinds. A BaseException, as
    SystemExit is: no ``except Exception`` on the way may take it for a failure."""

    def __init__(self, signum: int, step: int | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.step = signum, step
        self.handler = _replaced.get(signum)  # what caught() replaced: hand_back calls it
        self.where = ""  # "level 2 step 1,200": said by whoever knows it


def preemption_signals() -> tuple[int, ...]:
    """SIGTERM, and the signal submitit sends before the time limit (SIGUSR2, or its
    ``SUBMITIT_PREEMPT_SIGNAL``)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    warning = getattr(signal, f"SIG{name}", signal.SIGUSR2)
    return tuple(dict.fromkeys((signal.SIGTERM, warning)))


def _where_python_swallows_exceptions(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a garbage-collector callback or a ``__del__``, where an
    exception is printed as "Exception ignored in ..." and dropped."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    if not _where_python_swallows_exceptions(frame):  # there, raise_if_requested() raises it
        raise KeyboardInterrupt


def _on_preemption(signum: int, frame: FrameType | None) -> None:
    global _preemption
    if _preemption is not None and not _where_python_swallows_exceptions(frame):
        raise Preempted(signum)  # a second signal: stop now, unsaved
    _preemption = signum


@contextlib.contextmanager
def caught() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt as usual and is also remembered, and
    SIGTERM and submitit's warning signal leave a preemption request (:class:`Preempted`).

    Only from the main thread. Of SIGINT, only Python's own handler is replaced: a handler
    someone else installed, or SIGINT ignored (a background job), is left as it is. A
    preemption signal that is ignored stays ignored.
    """
    global _preemption
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replace_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _requested.clear()
    _preemption = None
    if replace_sigint:
        signal.signal(signal.SIGINT, _on_sigint)
    for signum in preemption_signals():
        if signal.getsignal(signum) is not signal.SIG_IGN:
            _replaced[signum] = signal.signal(signum, _on_preemption)
    try:
        yield
    finally:
        if replace_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum, handler in _replaced.items():
            signal.signal(signum, handler)
        _replaced.clear()
        _requested.clear()
        _preemption = None


def raise_if_requested() -> None:
    """In the main thread, raise KeyboardInterrupt if Ctrl-C was pressed within
    :func:`caught` (the raise it caused may have been swallowed); the raise clears the
    request. Other threads (seeds trained side by side) leave it to the main thread, which
    stops them all."""
    if threading.current_thread() is threading.main_thread() and _requested.is_set():
        _requested.clear()
        raise KeyboardInterrupt


def preemption_requested() -> bool:
    """Whether a preemption signal arrived within :func:`caught` (any thread may ask: seeds
    trained side by side each save their own state)."""
    return _preemption is not None


def raise_if_preempted(step: int | None = None) -> None:
    """Raise :class:`Preempted` if a preemption signal arrived; ``step``: the step whose
    state the caller has just saved (None: nothing unsaved)."""
    if _preemption is not None:
        raise Preempted(_preemption, step)


def hand_back(preempted: Preempted) -> None:
    """Do what the signal would have done, now that the run's state is saved: call the handler
    :func:`caught` replaced (submitit's USR2 handler requeues the job and exits; its SIGTERM
    handler only logs: Slurm requeues a preempted job itself), then exit with 128 + the
    signal's number, the status a process killed by it reports."""
    handler = preempted.handler
    if callable(handler):
        handler(preempted.signum, None)
    raise SystemExit(128 + preempted.signum)
