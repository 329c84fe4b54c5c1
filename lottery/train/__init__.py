"""Training: state, optimizers and schedules, the jit-compiled masked steps, the loop."""

from lottery.train.loop import LevelResult, Timing, Trainer, eval_points, host_tree
from lottery.train.optim import make_optimizer, make_schedule
from lottery.train.state import TrainState
from lottery.train.steps import make_evaluate, make_train_steps, masked, pad_for_eval

__all__ = [
    "LevelResult",
    "Timing",
    "TrainState",
    "Trainer",
    "eval_points",
    "host_tree",
    "make_evaluate",
    "make_optimizer",
    "make_schedule",
    "make_train_steps",
    "masked",
    "pad_for_eval",
]
