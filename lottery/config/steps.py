"""Durations written as step strings: ``2000it``, ``40ep``, ``1ep500it`` (as in OpenLTH).

A duration is kept as text in the config and turned into iterations only once the dataset
size and batch size are known, so the same preset reads naturally for any dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lottery.config.errors import ConfigError

_STEP_RE = re.compile(r"^\s*(?:(?P<ep>\d+)\s*ep)?\s*(?:(?P<it>\d+)\s*(?:it)?)?\s*$")


@dataclass(frozen=True)
class Step:
    """A duration of training: some epochs plus some iterations."""

    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: str | int, field: str = "step") -> Step:
        """Parse ``"40ep"``, ``"2000it"``, ``"1ep500it"`` or a bare count of iterations."""
        if isinstance(text, int):
            text = str(text)
        match = _STEP_RE.match(str(text))
        if not match or (match["ep"] is None and match["it"] is None):
            raise ConfigError(
                f"{field}={text!r} is not a duration; write iterations and/or epochs, "
                "e.g. '2000it', '40ep' or '1ep500it'"
            )
        return cls(int(match["ep"] or 0), int(match["it"] or 0))

    def to_iterations(self, steps_per_epoch: int) -> int:
        """Total iterations, with an epoch being ``steps_per_epoch`` iterations."""
        return self.epochs * steps_per_epoch + self.iterations

    def __str__(self) -> str:
        parts = [f"{self.epochs}ep"] if self.epochs else []
        if self.iterations or not parts:
            parts.append(f"{self.iterations}it")
        return "".join(parts)


def to_iterations(text: str | int, steps_per_epoch: int, field: str = "step") -> int:
    """Shorthand for ``Step.parse(text, field).to_iterations(steps_per_epoch)``."""
    return Step.parse(text, field).to_iterations(steps_per_epoch)


_SECONDS_RE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|min|h)\s*$")
_UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0}


def parse_cadence(text: str, field: str) -> Step | float:
    """A cadence: a duration of training (``2000it``, ``1ep``) or of wall time, in seconds
    (``30s``, ``5min``, ``1h``)."""
    match = _SECONDS_RE.match(str(text))
    if match:
        seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"]]
        if seconds <= 0:
            raise ConfigError(f"{field}={text!r} must be longer than 0 seconds")
        return seconds
    try:
        step = Step.parse(text, field)
    except ConfigError:
        raise ConfigError(
            f"{field}={text!r} is neither a duration of training ('2000it', '1ep') nor of time "
            "('30s', '5min', '1h')"
        ) from None
    if step == Step():
        raise ConfigError(f"{field}={text!r} must be longer than 0 iterations")
    return step
