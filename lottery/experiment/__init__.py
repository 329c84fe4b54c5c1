"""The experiment driver: the plan of a run, levels (prune, then train), rewinding, resume."""

from lottery.experiment.checks import prepare
from lottery.experiment.driver import Experiment
from lottery.experiment.entry import run
from lottery.experiment.levels import LevelStart, train_level
from lottery.experiment.plan import Plan
from lottery.experiment.summary import summarize

__all__ = ["Experiment", "LevelStart", "Plan", "prepare", "run", "summarize", "train_level"]
