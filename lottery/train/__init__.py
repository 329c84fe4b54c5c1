"""Training: state, optimizers and schedules, the jit-compiled masked steps, the loop, hooks."""

from lottery.train.hooks import AtSteps, Checkpoint, Evaluate, UpdateMask
from lottery.train.loop import DivergedError, Hook, RunState, Timing, Trainer, host_tree
from lottery.train.optim import make_optimizer, make_schedule
from lottery.train.state import TrainState
from lottery.train.steps import make_evaluate, make_train_steps, masked, pad_for_eval

__all__ = [
    "AtSteps",
    "Checkpoint",
    "DivergedError",
    "Evaluate",
    "Hook",
    "RunState",
    "Timing",
    "TrainState",
    "Trainer",
    "UpdateMask",
    "host_tree",
    "make_evaluate",
    "make_optimizer",
    "make_schedule",
    "make_train_steps",
    "masked",
    "pad_for_eval",
]
