"""optax optimizers and learning-rate schedules from the config.

The learning rate is a function of the *training step*, not of the optimizer's own counter:
a level that rewinds to step k starts with a fresh optimizer state while its schedule goes on
from step k (as in Frankle et al. 2020). The optimizer is wrapped in
``optax.inject_hyperparams`` and the train step writes ``schedule(step)`` into it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

from lottery.config import ConfigError, OptimizerConfig, to_iterations

Schedule = Callable[[jnp.ndarray], jnp.ndarray]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def make_schedule(cfg: OptimizerConfig, steps_per_epoch: int, total_steps: int) -> Schedule:
    """Learning rate at a training step: the schedule times a linear warmup factor."""
    warmup = to_iterations(cfg.warmup, steps_per_epoch, "optimizer.warmup")
    if cfg.schedule == "constant":
        base = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "step":
        milestones = [
            to_iterations(m, steps_per_epoch, "optimizer.milestones") for m in cfg.milestones
        ]
        base = _step_decay(cfg.lr, cfg.gamma, milestones)
    elif cfg.schedule == "cosine":
        base = optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1))
    else:
        raise ConfigError(
            f"unknown optimizer.schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}"
        )
    if warmup == 0:
        return base

    def warmed_up(step: jnp.ndarray) -> jnp.ndarray:
        return base(step) * jnp.minimum(1.0, step / warmup)

    return warmed_up


def _step_decay(lr: float, gamma: float, milestones: list[int]) -> Schedule:
    """``lr * gamma ** (milestones reached)``, a milestone counting from its own step on
    (PyTorch's MultiStepLR and OpenLTH).

    optax's ``piecewise_constant_schedule`` applies its boundaries at the same steps (with
    optax 0.2.8: 0.1 / 0.01 / 0.01 at steps 99 / 100 / 101 of milestone 100), but multiplies
    its scales into the learning rate one after the other in float32: for many settings
    (lr 1.2e-3 or 2e-3 with gamma 0.1, say) its value is 1 ulp from ``lr * gamma ** n``.
    This expression is kept so that earlier runs' results stay bit for bit;
    tests/end_to_end/test_hydra_conventions.py checks both against each other.
    """
    points = jnp.asarray(sorted(milestones), jnp.int32)

    def schedule(step: jnp.ndarray) -> jnp.ndarray:
        return lr * gamma ** jnp.sum(step >= points)

    return schedule


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """The optimizer, with its learning rate injected (set it with :func:`with_learning_rate`).

    ``weight_decay`` is an L2 term added to the gradient of *every* parameter, biases and
    BatchNorm included, as PyTorch's SGD/Adam and the papers' code (OpenLTH) do; for
    ``adamw`` it is decoupled (optax.adamw).
    """

    def build(learning_rate: float) -> optax.GradientTransformation:
        decay = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
        if cfg.name == "sgd":
            momentum = cfg.momentum or None
            return optax.chain(
                *decay, optax.sgd(learning_rate, momentum=momentum, nesterov=cfg.nesterov)
            )
        if cfg.name == "adam":
            return optax.chain(*decay, optax.adam(learning_rate, cfg.b1, cfg.b2, cfg.eps))
        if cfg.name == "adamw":
            return optax.adamw(
                learning_rate, cfg.b1, cfg.b2, cfg.eps, weight_decay=cfg.weight_decay
            )
        raise ConfigError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")

    build(cfg.lr)  # fail early on an unknown name
    return optax.inject_hyperparams(build)(learning_rate=cfg.lr)


def with_learning_rate(opt_state: optax.OptState, learning_rate: jnp.ndarray) -> optax.OptState:
    """The injected optimizer state with its learning rate replaced."""
    hyperparams = dict(opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    return opt_state._replace(hyperparams=hyperparams)
