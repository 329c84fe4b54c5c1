"""Compaction: a structured-pruned network rebuilt with its alive units only.

A structured mask (:mod:`lottery.pruning.structured`) zeroes whole neurons and channels, but
the masked network still computes with them. Here each pruned unit's producer slices (kernel
output slice, bias, BatchNorm scale, bias and statistics) and consumer slices (the next
layers' kernel input slices) are cut out, and a module of the same family is built with the
narrower widths (``hidden`` of the MLP, ``widths`` of the convolutional families), so the
result is physically smaller and faster while computing the same logits in eval mode.

A residual block with an identity shortcut that the mask prunes whole (every leaf False,
``pruning.method=blocks``) outputs its input, and is left out of the rebuilt module
(``removed``), so the compacted network is shallower as well as narrower.

Removing a unit is exact because a pruned unit outputs exactly 0: its kernel slice and bias
are 0 (ReLU(0) = 0), and behind BatchNorm its scale and bias are 0 whatever the statistics.

MobileNetV2's depthwise convolutions stay consistent with no rule of their own: a depthwise
kernel (3, 3, 1, C) is a producer of its channels' group (the block's expansion, or the
stream where the block has none), so cutting a unit out of the group cuts its filter out of
the kernel along the last axis, and the rebuilt depthwise layer takes as many groups as the
channels it is given.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lottery.config import ConfigError
from lottery.models.cnn1d import CNN1D
from lottery.models.conv import ConvNet
from lottery.models.mlp import MLP
from lottery.models.mobilenet import MobileNetV2
from lottery.models.network import BatchStats, Network, Params
from lottery.models.resnet_cifar import CifarResNet
from lottery.models.resnet_imagenet import ImageNetResNet
from lottery.models.vgg import VGG
from lottery.pruning.mask import Mask, apply_mask, flatten, layer_of, unflatten
from lottery.pruning.structured import (
    SUPPORTED,
    UnitGroup,
    alive_in,
    removed_blocks,
    unit_groups,
)

COMPACTABLE = (MLP, ConvNet, VGG, CNN1D, CifarResNet, ImageNetResNet, MobileNetV2)

_NUMBERED = re.compile(r"(conv|fc)(\d+)/kernel")
_BLOCK_CONV = re.compile(r"block(\d+)_(\d+)/conv(\d+)/kernel")
_MOBILE_CONV = re.compile(r"block(\d+)_(\d+)/(expand|project)_conv/kernel")


def _numbered(shapes: dict[str, tuple[int, ...]], prefix: str) -> tuple[int, ...]:
    """Output widths of the top-level layers ``{prefix}1, {prefix}2, ...`` in order."""
    found = sorted(
        (int(m.group(2)), shape[-1])
        for path, shape in shapes.items()
        if (m := _NUMBERED.fullmatch(path)) and m.group(1) == prefix
    )
    return tuple(width for _, width in found)


def _resnet_widths(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """``stem_conv``'s channels, then every block's convolutions', in order."""
    convs = sorted(
        (tuple(int(g) for g in m.groups()), shape[-1])
        for path, shape in shapes.items()
        if (m := _BLOCK_CONV.fullmatch(path))
    )
    return (shapes["stem_conv/kernel"][-1], *(width for _, width in convs))


def _mobilenet_widths(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """``stem_conv``'s channels, every block's expansion (where it has one) and projection,
    then ``head_conv``'s: :class:`~lottery.models.mobilenet.MobileNetV2`'s ``widths``."""
    convs = sorted(
        (int(m.group(1)), int(m.group(2)), m.group(3) == "project", shape[-1])
        for path, shape in shapes.items()
        if (m := _MOBILE_CONV.fullmatch(path))
    )
    middle = (width for *_, width in convs)
    return (shapes["stem_conv/kernel"][-1], *middle, shapes["head_conv/kernel"][-1])


def _narrower(module: nn.Module, shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """``module`` rebuilt with the widths of the (sliced) parameter ``shapes``."""
    if isinstance(module, MLP):
        return module.clone(hidden=_numbered(shapes, "fc"))
    if isinstance(module, ConvNet):
        return module.clone(widths=_numbered(shapes, "conv"), hidden=_numbered(shapes, "fc"))
    if isinstance(module, (VGG, CNN1D)):
        return module.clone(widths=_numbered(shapes, "conv"))
    if isinstance(module, (CifarResNet, ImageNetResNet)):
        return module.clone(widths=_resnet_widths(shapes))
    if isinstance(module, MobileNetV2):
        return module.clone(widths=_mobilenet_widths(shapes))
    raise ConfigError(f"compaction supports {SUPPORTED}, not a {type(module).__name__}")


def scaled_network(network: Network, factor: float) -> Network:
    """The same family with every hidden width (neurons, channels) times ``factor``, rounded,
    at least 1; the output layer keeps its classes. Equal widths stay equal (a ResNet's
    residual stream keeps one width per stage)."""
    shapes = {
        path: tuple(leaf.shape)
        for path, leaf in flatten(jax.eval_shape(network.init, jax.random.key(0))[0]).items()
    }
    scaled = {}
    for path, shape in shapes.items():
        if path.startswith("out/") or len(shape) == 0:
            scaled[path] = shape
        else:
            scaled[path] = (*shape[:-1], max(1, round(shape[-1] * factor)))
    return dataclasses.replace(network, module=_narrower(network.module, scaled))


def kept_units(group: UnitGroup, flat_mask: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of the units compaction keeps: the alive ones (at least one, see below).

    A group with no alive unit keeps its first: its output is 0 all the same, and no layer of
    zero width has to be built.
    """
    kept = np.flatnonzero(alive_in(group, flat_mask))
    return kept if len(kept) else np.array([0])


def _take(array: np.ndarray, axis: int, size: int, kept: np.ndarray) -> np.ndarray:
    """The slices of ``kept`` units along ``axis`` (a flattened axis: at every position)."""
    selected = np.isin(np.arange(array.shape[axis]) % size, kept)
    return np.compress(selected, array, axis=axis)


def compact(
    network: Network, params: Params, batch_stats: BatchStats, mask: Mask
) -> tuple[Network, Params, BatchStats]:
    """A smaller network of the same family with the alive units of ``mask`` only.

    The compacted model's eval-mode logits equal ``network.apply(apply_mask(params, mask),
    batch_stats, x, train=False)`` up to float rounding (sums lose only zero terms). A unit
    is removed when all its producer entries are masked (kernel slices, bias, BatchNorm
    scale and bias), which is how :func:`~lottery.pruning.structured.structured_prune`
    leaves it; other units are kept.

    What is counted: the compacted parameters are the masked parameters minus the removed
    units' producer slices and consumer slices (their rows of the next layers' kernels), so
    their number is that of the entries in no removed unit's slices. For a mask made by
    structured pruning alone, that equals the number of True entries of the mask; weights
    masked one by one (unstructured) inside kept units stay in it, as zeros.

    Supports the families of :func:`~lottery.pruning.structured.unit_groups`; any other
    module is a ConfigError.
    """
    if not isinstance(network.module, COMPACTABLE):
        raise ConfigError(f"compaction supports {SUPPORTED}, not a {type(network.module).__name__}")
    flat_mask = {path: np.asarray(m, dtype=bool) for path, m in flatten(mask).items()}
    flat_params = {p: np.asarray(w) for p, w in flatten(apply_mask(params, mask)).items()}
    flat_stats = {p: np.asarray(s) for p, s in flatten(batch_stats).items()}
    removed = _whole_blocks_removed(network.module, params, mask)
    for flat in (flat_mask, flat_params, flat_stats):
        for path in [p for p in flat if p.split("/", 1)[0] in removed]:
            del flat[path]
    for group in unit_groups(unflatten(flat_mask)):
        kept = kept_units(group, flat_mask)
        for path, axis in group.producers + group.consumers:
            flat_params[path] = _take(flat_params[path], axis, group.size, kept)
        normalised = {layer_of(path) for path, _ in group.producers}
        for path in flat_stats:
            if layer_of(path) in normalised:  # BatchNorm mean and var of a producer
                flat_stats[path] = _take(flat_stats[path], 0, group.size, kept)
    shapes = {path: array.shape for path, array in flat_params.items()}
    module = _narrower(network.module, shapes)
    if removed:
        module = module.clone(removed=(*module.removed, *removed))
    smaller = dataclasses.replace(network, module=module)
    new_params = jax.tree.map(jnp.asarray, unflatten(flat_params))
    new_stats = jax.tree.map(jnp.asarray, unflatten(flat_stats)) if flat_stats else {}
    _check_shapes(smaller, new_params, new_stats)
    return smaller, new_params, new_stats


def _whole_blocks_removed(module: nn.Module, params: Params, mask: Mask) -> list[str]:
    """The identity-shortcut blocks ``mask`` prunes whole (``pruning.method=blocks``): left
    out of the compacted module, which is then shallower. Only the residual families have
    them."""
    if not isinstance(module, (CifarResNet, ImageNetResNet, MobileNetV2)):
        return []
    try:
        return removed_blocks(params, mask)
    except ConfigError:  # a network without identity blocks has none to leave out
        return []


def _check_shapes(network: Network, params: Params, batch_stats: BatchStats) -> None:
    """The rebuilt module's own variables have exactly the shapes of the sliced ones."""
    expected = jax.eval_shape(network.init, jax.random.key(0))
    want = {p: s.shape for p, s in flatten({"params": expected[0], "stats": expected[1]}).items()}
    got = {p: np.shape(a) for p, a in flatten({"params": params, "stats": batch_stats}).items()}
    if want != got:
        wrong = sorted(p for p in want.keys() | got.keys() if want.get(p) != got.get(p))
        raise RuntimeError(f"compacted variables do not fit the rebuilt module at {wrong[:4]}")


def parameter_count(params: Any) -> int:
    """All entries of a parameter pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))
