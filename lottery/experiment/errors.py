"""How a level can end other than finished: each is caught by the driver (or the replicas'
runner) and turned into what the user sees."""

from __future__ import annotations

from lottery.config import RunError


class BrokenLevel(Exception):
    """A finished level's files cannot be read back: it is set aside and made again (the
    same bits: training is a function of the config and seeds)."""

    def __init__(self, level: int, reason: str) -> None:
        super().__init__(reason)
        self.level = level


class LevelDiverged(RunError):
    """A level's training diverged (see :class:`lottery.train.DivergedError`)."""


class NothingLeftToPrune(Exception):
    """The strategy removes no weight any more: later levels would repeat the last one."""
