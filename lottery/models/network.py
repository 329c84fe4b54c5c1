"""A Flax module together with how to initialise and apply it, BatchNorm statistics included."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lottery.kernels.layers import Kernels
from lottery.models.conv import ConvNet
from lottery.models.mobilenet import MobileNetV2
from lottery.models.resnet_cifar import CifarResNet
from lottery.models.resnet_imagenet import ImageNetResNet
from lottery.models.vgg import VGG

Params = Any  # a nested dict of arrays
BatchStats = Any  # a nested dict of arrays, empty for models without BatchNorm

# The zoo's networks whose ``kernels`` field chooses their layers' kernels. A model of one's
# own builds its own layers, whatever its fields are called.
CHOOSING_KERNELS = (ConvNet, VGG, CifarResNet, ImageNetResNet, MobileNetV2)


@dataclass(frozen=True)
class Network:
    """Wraps a Linen module whose ``__call__(x, train)`` returns logits (a model of one's own
    without ``train`` is wrapped in :class:`lottery.models.user.CalledWithoutTrain`).

    Parameters and BatchNorm statistics are plain pytrees (nested dicts), so masks, rewinding
    and interpolation are pytree operations.

    Which kernels train it is the module's own choice, made where it was built (the ``kernels``
    field of the convolutional families, :mod:`lottery.kernels.layers`): :attr:`kernels`
    reads it, :meth:`with_kernels` makes another.
    """

    module: nn.Module
    input_shape: tuple[int, ...]
    # Redraws some parameters after the module's own initialisation (see init.py).
    reinit: Callable[[jax.Array, Params], Params] | None = None

    @property
    def kernels(self) -> Kernels:
        """The kernels the module builds its layers on: ``"cpu"`` (the CPU kernels, equal to
        float rounding, faster on a CPU and a GPU) or ``"xla"`` (Flax's layers; also every
        module without the choice, such as a model of one's own)."""
        return self.module.kernels if isinstance(self.module, CHOOSING_KERNELS) else "xla"

    def with_kernels(self, kernels: Kernels) -> Network:
        """This network with its module's layers built on ``kernels`` (the same parameters);
        itself where the module has no choice of kernels."""
        if not isinstance(self.module, CHOOSING_KERNELS) or self.kernels == kernels:
            return self
        return dataclasses.replace(self, module=self.module.clone(kernels=kernels))

    def init(self, key: jax.Array) -> tuple[Params, BatchStats]:
        """Fresh parameters and BatchNorm statistics (``{}`` when there is none)."""
        # Flax's lazy_init: the variables' initialisers run as in ``init`` (the same numbers,
        # tested), but the forward pass that ``init`` also runs, compiling each layer's
        # operations one by one (a second or more of start-up for a conv net), is left out.
        dummy = jax.ShapeDtypeStruct((1, *self.input_shape), jnp.float32)
        variables = self.module.lazy_init(key, dummy, train=False)
        params = dict(variables["params"])
        if self.reinit is not None:
            # Its own stream, so the kernels are the same with or without it.
            params = self.reinit(jax.random.fold_in(key, 7), params)
        return params, dict(variables.get("batch_stats", {}))

    def apply(
        self, params: Params, batch_stats: BatchStats, x: jax.Array, train: bool
    ) -> tuple[jax.Array, BatchStats]:
        """Logits, and the BatchNorm statistics updated by this batch when ``train``."""
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        if train and batch_stats:
            logits, updates = self.module.apply(variables, x, train=True, mutable=["batch_stats"])
            return logits, updates["batch_stats"]
        return self.module.apply(variables, x, train=train), batch_stats
