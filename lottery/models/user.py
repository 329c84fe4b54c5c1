"""A model of your own: ``model.name=package.module:Name``, with ``model.kwargs={...}``.

``Name`` is either

- a Flax Linen module class: built as ``Name(num_classes=<the data's classes>, **kwargs)``
  when it has a ``num_classes`` field, else as ``Name(**kwargs)``; or
- a factory ``Name(num_classes, **kwargs) -> flax.linen.Module``.

The module's ``__call__(x, train)`` takes a batch of examples (the data's shape with a batch
axis in front, float32) and returns logits of shape ``(batch, num_classes)``. ``train`` is
True while training: BatchNorm layers written ``nn.BatchNorm(use_running_average=not
train)`` keep their statistics in the ``batch_stats`` collection, which rewinding, the
controls and ``lottery.load`` carry as they do the zoo's. A ``__call__`` without a ``train``
argument is called without one (wrapped in :class:`CalledWithoutTrain`, which keeps its
parameter paths). No other collection and no random numbers inside the call
(no ``dropout`` rng is given): both fail before training with one line.

The module is imported as ``python -m`` would find it: from ``sys.path`` and the folder the
command runs in, so ``python -m lottery model.name=mymodels:Net`` works from the folder
holding ``mymodels.py`` (and so does ``lottery.load`` of its results, run from there). The
import writes no ``__pycache__`` beside the user's file.

Prunable leaves are found by ``pruning.prunable`` as for the zoo (every ``kernel``, i.e.
Dense and Conv kernels, by default).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lottery.config import ConfigError
from lottery.config.applicability import is_user_model
from lottery.config.imports import import_user_module, one_line_reason, split_import_path

__all__ = ["CalledWithoutTrain", "build_module", "check_network", "is_user_model", "resolve"]

def resolve(name: str) -> Any:
    """The class or factory ``name`` (``package.module:Name``) imports to; one line if none."""
    module_path, attribute = split_import_path("model.name", name, "package.module:Name")
    module = import_user_module("model.name", name, module_path)
    target = getattr(module, attribute, None)
    if target is None:
        found = [n for n, v in vars(module).items() if _is_candidate(v) and not n.startswith("_")]
        listed = f"it has {', '.join(sorted(found)[:8])}" if found else "it defines no module"
        raise ConfigError(
            f"model.name={name!r}: module {module_path!r} has no attribute {attribute!r} "
            f"({listed}); name one of them"
        )
    if isinstance(target, nn.Module):
        raise ConfigError(
            f"model.name={name!r} is a module instance; give its class or a factory "
            "(num_classes, **model.kwargs) -> flax.linen.Module"
        )
    if not _is_candidate(target):
        raise ConfigError(
            f"model.name={name!r} is not a Flax Linen module class or a factory (num_classes, "
            f"**model.kwargs) -> flax.linen.Module (it is the {type(target).__name__} "
            f"{repr(target)[:40]}); name one"
        )
    return target


def _is_candidate(value: Any) -> bool:
    """A Linen module class, or a function (a factory)."""
    if isinstance(value, type):
        return issubclass(value, nn.Module)
    return inspect.isfunction(value)


def build_module(name: str, kwargs: dict[str, Any], num_classes: int) -> nn.Module:
    """The module of a model of your own, for ``num_classes`` classes."""
    target = resolve(name)
    kwargs = dict(kwargs)
    if "num_classes" in kwargs:
        raise ConfigError(
            f"model.kwargs.num_classes={kwargs['num_classes']!r}: the number of classes is the "
            "data's, given to the model; remove it"
        )
    if isinstance(target, type):
        if "num_classes" in {f.name for f in dataclasses.fields(target)}:
            kwargs["num_classes"] = num_classes
        call, what = (lambda: target(**kwargs)), f"{target.__name__}(**model.kwargs)"
    else:
        call, what = (lambda: target(num_classes, **kwargs)), "the factory"
    try:
        module = call()
    except Exception as error:
        shown = {k: v for k, v in kwargs.items() if k != "num_classes"}
        raise ConfigError(
            f"model.name={name!r}: {what} with model.kwargs={shown} raised "
            f"{one_line_reason(error)}; give the keyword arguments it takes"
        ) from None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"model.name={name!r}: the factory returned a {type(module).__name__}, not a "
            "flax.linen.Module; return the module"
        )
    return module if takes_train(module) else CalledWithoutTrain(module)


class CalledWithoutTrain(nn.Module):
    """A module whose ``__call__(x)`` has no ``train`` argument, called as ``(x, train)`` like
    every other network here. It shares the inner module's scope: the parameter paths are the
    inner module's own (``Dense_0/kernel``, not ``inner/Dense_0/kernel``)."""

    inner: nn.Module

    def setup(self) -> None:
        nn.share_scope(self, self.inner)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.inner(x)


def takes_train(module: nn.Module) -> bool:
    """Whether the module's ``__call__`` takes a ``train`` argument (or any keyword)."""
    try:
        parameters = inspect.signature(type(module).__call__).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "train" or p.kind is p.VAR_KEYWORD for p in parameters)


def check_network(network: Any, params: Any, batch_stats: Any, num_classes: int, name: str) -> None:
    """One line unless the module keeps only ``params`` and ``batch_stats`` and maps a batch of
    examples to ``(batch, num_classes)`` logits, training and evaluating (traced, not run)."""
    dummy = jax.ShapeDtypeStruct((1, *network.input_shape), jnp.float32)
    try:
        variables = jax.eval_shape(
            lambda key: network.module.lazy_init(key, dummy, train=False), jax.random.key(0)
        )
    except Exception:
        variables = {"params": None}  # the failure is found again, and told, below
    others = sorted(set(variables) - {"params", "batch_stats"})
    if others:
        raise ConfigError(
            f"model.name={name!r} has variable collections {', '.join(others)}; only params "
            "and batch_stats (BatchNorm) are kept, pruned and rewound: remove them"
        )
    batch = jax.ShapeDtypeStruct((2, *network.input_shape), jnp.float32)
    for train in (True, False):
        try:
            logits, _ = jax.eval_shape(
                lambda p, s, x, train=train: network.apply(p, s, x, train), params, batch_stats,
                batch,
            )
        except Exception as error:
            raise ConfigError(
                f"model.name={name!r} fails on a batch of shape {batch.shape} with "
                f"train={train}: {one_line_reason(error)}; fix its __call__(x, train)"
            ) from None
        if tuple(logits.shape) != (2, num_classes):
            raise ConfigError(
                f"model.name={name!r} returns logits of shape {tuple(logits.shape)} for a batch "
                f"of shape {batch.shape}; it must return (batch, num_classes) = (2, "
                f"{num_classes})"
            )
