"""Ctrl-C that is never lost.

Python raises ``KeyboardInterrupt`` in whatever code the main thread runs when SIGINT
arrives. When that code is a garbage-collector callback (JAX registers one, and a train step
makes garbage), Python prints "Exception ignored in: <function _xla_gc_callback ...>" and goes
on: the run went on training as if nothing had been pressed (about one Ctrl-C in ten, measured
on the default experiment). Within :func:`caught`, SIGINT leaves a flag, and raises at once
unless it arrived where Python would swallow the raise; the training loop calls
:func:`raise_if_requested` between stretches, which raises it there, within one evaluation
interval.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_requested = threading.Event()


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


@contextlib.contextmanager
def caught() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt as usual and is also remembered.

    Only Python's own SIGINT handler is replaced, from the main thread: a handler someone
    else installed, or SIGINT ignored (a background job), is left as it is.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    _requested.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _requested.clear()


def raise_if_requested() -> None:
    """In the main thread, raise KeyboardInterrupt if Ctrl-C was pressed within
    :func:`caught` (the raise it caused may have been swallowed); the raise clears the
    request. Other threads (seeds trained side by side) leave it to the main thread, which
    stops them all."""
    if threading.current_thread() is threading.main_thread() and _requested.is_set():
        _requested.clear()
        raise KeyboardInterrupt
