"""Structured pruning: whole neurons and channels, so that the network can be made smaller.

Unstructured (magnitude) pruning zeroes single weights: the network stays the same size and
only sparse kernels could profit. Structured pruning removes *units* (a dense layer's output
neuron, a convolution's output channel) whole, so :mod:`lottery.deploy.compact` can rebuild a
physically narrower network that computes exactly what the masked one does.

A unit's weights lie in several leaves, so units are handled as :class:`UnitGroup` s: the
*producers* of a group are the slices that make its units (kernels' output axis, biases,
BatchNorm scale and bias), the *consumers* the next layers' kernels' input axis, which read
them. Pruning a unit sets all of those slices False in the mask; the masked training zeroes
every leaf where its mask is False (biases and BatchNorm included), so a pruned unit outputs
exactly 0 (ReLU(0), or BatchNorm with scale and bias 0), and removing it changes nothing.

In a residual network the channels added together by the skip connections must be pruned
together or not at all: within a stage, the stem (or the projection shortcut that opens the
stage), and every block's last convolution with its BatchNorm write into one residual stream,
and form ONE group. Each block's inner convolutions (``conv1``, and ``conv2`` of bottlenecks)
are groups of their own. The output layer ``out`` is never pruned: its units are the classes.

The family is recognised from the parameter paths (no model name is needed):
``fc1, fc2, ..., out`` (``mlp``, ``lenet_300_100``); ``conv1, ..., fc1, ..., out``
(``conv2/4/6``); ``conv1, bn1, ..., out`` (``vgg*``); ``conv1..3, out`` with 1-D kernels
(``mnist1d_cnn``); ``stem_conv, stem_bn, block{stage}_{index}/..., out`` (the CIFAR ResNets
``resnet20/32/56/110`` and the ImageNet ResNets ``resnet18/34/50``, bottlenecks included);
``stem_conv, stem_bn, block{stage}_{index}/{expand,depthwise,project}_{conv,bn}, head_conv,
head_bn, out`` (``mobilenetv2``, ``mobilenetv2_cifar``).

MobileNetV2's inverted residuals: a block's expansion channels (the 1x1 ``expand_conv``'s
outputs, which are the depthwise convolution's channels, which are the 1x1 ``project_conv``'s
inputs) are one group per block, whose producers are ``expand_conv``, ``expand_bn``,
``depthwise_conv`` (its output axis: one filter per channel) and ``depthwise_bn``; pruning a
channel removes its depthwise filter too. A block without expansion (t = 1) filters its input
stream depthwise, so its depthwise layers join the producers of the stream. A stage's first
block opens a new stream (its ``project_conv`` and ``project_bn``), the stage's other blocks
add theirs to it (the identity shortcut), so a stage's output channels are one group;
``head_conv`` is a group of its own, read by ``out``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lottery.config import ConfigError
from lottery.pruning.magnitude import prune_count
from lottery.pruning.mask import Mask, flatten, unflatten

SUPPORTED = (
    "mlp, lenet_300_100, conv2/4/6, vgg11/13/16/19, mnist1d_cnn, "
    "resnet20/32/56/110, resnet18/34/50 and mobilenetv2(_cifar)"
)
SCOPES = ("layerwise", "global")
NORMS = ("l1", "l2")

_CHAIN = re.compile(r"(conv|fc|bn)(\d+)|out")
_BLOCK = re.compile(r"block(\d+)_(\d+)")
_CONV = re.compile(r"conv(\d+)")
_BN = re.compile(r"bn(\d+)")


@dataclass(frozen=True)
class UnitGroup:
    """One set of units (neurons or channels) pruned together, unit by unit.

    Unit ``i`` of the group is slice ``i`` along ``axis`` of every ``(path, axis)`` producer
    and consumer. A consumer axis longer than ``size`` is a flattened (positions, channels)
    axis, channels fastest (a conv output reshaped for a dense layer): there slice ``j`` is
    unit ``j % size``.
    """

    name: str  # e.g. "fc1", "block1_1/conv1", "stage1" (a residual stream)
    producers: tuple[tuple[str, int], ...]  # kernels' output axis, biases, BatchNorm scale/bias
    consumers: tuple[tuple[str, int], ...]  # the next layers' kernels' input axis
    size: int

    @property
    def kernels(self) -> tuple[tuple[str, int], ...]:
        """The producer kernels: the weights a unit's score is computed from."""
        return tuple((path, axis) for path, axis in self.producers if path.endswith("/kernel"))


@dataclass
class _Draft:
    """A group being put together while walking the layers."""

    name: str
    producers: list[tuple[str, int]] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)


# --- discovering the groups from the parameter paths ------------------------------------------


def _unsupported(layers: list[str], why: str) -> ConfigError:
    return ConfigError(
        f"structured pruning supports {SUPPORTED}; a network with layers "
        f"{', '.join(layers[:6])}{', ...' if len(layers) > 6 else ''} is not one ({why})"
    )


def _producers(
    shapes: dict[str, tuple[int, ...]], layer: str, bn: str | None
) -> list[tuple[str, int]]:
    """A layer's kernel output axis and bias, and its BatchNorm's scale and bias."""
    found = [(f"{layer}/kernel", _ndim(shapes, f"{layer}/kernel") - 1)]
    leaves = [f"{layer}/bias"] + ([f"{bn}/scale", f"{bn}/bias"] if bn else [])
    return found + [(path, 0) for path in leaves if path in shapes]


def _consumer(shapes: dict[str, tuple[int, ...]], layer: str) -> tuple[str, int]:
    """A kernel's input axis: the last but one (dense, 1-D and 2-D convolutions alike)."""
    return f"{layer}/kernel", _ndim(shapes, f"{layer}/kernel") - 2


def _ndim(shapes: dict[str, tuple[int, ...]], path: str) -> int:
    if path not in shapes:
        raise ConfigError(f"structured pruning supports {SUPPORTED}; this network has no {path}")
    return len(shapes[path])


def _chain_groups(shapes: dict[str, tuple[int, ...]], layers: list[str]) -> list[_Draft]:
    """Plain feed-forward networks: ``conv1, conv2, ... (bn1, ...), fc1, fc2, ..., out``."""
    numbered = {kind: {} for kind in ("conv", "fc", "bn")}
    for layer in layers:
        match = _CHAIN.fullmatch(layer)
        if match is None:
            raise _unsupported(layers, f"unexpected layer {layer!r}")
        if match.group(1):
            numbered[match.group(1)][int(match.group(2))] = layer
    if "out" not in layers:
        raise _unsupported(layers, "no output layer 'out'")
    if set(numbered["bn"]) - set(numbered["conv"]):
        raise _unsupported(layers, "a BatchNorm without its convolution")
    order = [numbered[kind][i] for kind in ("conv", "fc") for i in sorted(numbered[kind])]
    drafts = []
    for i, layer in enumerate(order):
        bn = numbered["bn"].get(int(layer[len("conv") :])) if layer.startswith("conv") else None
        following = order[i + 1] if i + 1 < len(order) else "out"
        drafts.append(_Draft(layer, _producers(shapes, layer, bn), [_consumer(shapes, following)]))
    return drafts


def _convs(layers: list[str]) -> list[str]:
    """A block's ``conv1, conv2, ...`` in order (its shortcut apart)."""
    convs = [(int(m.group(1)), name) for name in layers if (m := _CONV.fullmatch(name))]
    return [name for _, name in sorted(convs)]


def _bn(block: str, conv: str) -> str:
    """The BatchNorm after a block's convolution: ``conv2`` -> ``bn2``."""
    return f"{block}/bn{conv[len('conv') :]}"


def _resnet_groups(
    params_layers: dict[str, list[str]], shapes: dict[str, tuple[int, ...]]
) -> list[_Draft]:
    """Residual networks: one group per residual stream, one per inner convolution."""
    layers = list(params_layers)
    blocks = sorted(
        ((int(m.group(1)), int(m.group(2))), name)
        for name in layers
        if (m := _BLOCK.fullmatch(name))
    )
    if set(layers) != {"stem_conv", "stem_bn", "out", *(name for _, name in blocks)}:
        raise _unsupported(layers, "layers besides stem_conv, stem_bn, block*_* and out")
    stream = _Draft("stem", _producers(shapes, "stem_conv", "stem_bn"))
    drafts = [stream]
    for (stage, _), block in blocks:
        convs = _convs(params_layers[block])
        if len(convs) < 2:
            raise _unsupported(layers, f"{block} has fewer than two convolutions")
        stream.consumers.append(_consumer(shapes, f"{block}/{convs[0]}"))
        if "shortcut_conv" in params_layers[block]:
            stream.consumers.append(_consumer(shapes, f"{block}/shortcut_conv"))
            shortcut = f"{block}/shortcut_conv", f"{block}/shortcut_bn"
            stream = _Draft(f"stage{stage}", _producers(shapes, *shortcut))
            drafts.append(stream)
        elif stream.name == "stem":
            stream.name = f"stage{stage}"  # the stem writes into this stage's stream
        for inner, following in itertools.pairwise(convs):
            producers = _producers(shapes, f"{block}/{inner}", _bn(block, inner))
            consumers = [_consumer(shapes, f"{block}/{following}")]
            drafts.append(_Draft(f"{block}/{inner}", producers, consumers))
        last = convs[-1]
        stream.producers += _producers(shapes, f"{block}/{last}", _bn(block, last))
    stream.consumers.append(_consumer(shapes, "out"))
    return drafts


_MOBILE_BLOCK = ("expand_conv", "expand_bn", "depthwise_conv", "depthwise_bn", "project_conv",
                 "project_bn")


def _mobilenet_groups(
    params_layers: dict[str, list[str]], shapes: dict[str, tuple[int, ...]]
) -> list[_Draft]:
    """MobileNetV2: one group per stage's stream, per block's expansion, and the head."""
    layers = list(params_layers)
    blocks = sorted(
        ((int(m.group(1)), int(m.group(2))), name)
        for name in layers
        if (m := _BLOCK.fullmatch(name))
    )
    expected = {"stem_conv", "stem_bn", "head_conv", "head_bn", "out"}
    if set(layers) != expected | {name for _, name in blocks}:
        raise _unsupported(layers, "layers besides stem_*, block*_*, head_* and out")
    stream = _Draft("stem", _producers(shapes, "stem_conv", "stem_bn"))
    drafts = [stream]
    for (stage, index), block in blocks:
        inner = set(params_layers[block])
        if not inner <= set(_MOBILE_BLOCK) or inner < set(_MOBILE_BLOCK[2:]):
            raise _unsupported(layers, f"{block} is not an inverted residual block")
        depthwise = _producers(shapes, f"{block}/depthwise_conv", f"{block}/depthwise_bn")
        project = _consumer(shapes, f"{block}/project_conv")
        if "expand_conv" in inner:
            stream.consumers.append(_consumer(shapes, f"{block}/expand_conv"))
            expansion = _producers(shapes, f"{block}/expand_conv", f"{block}/expand_bn")
            drafts.append(_Draft(f"{block}/expand", expansion + depthwise, [project]))
        else:  # t = 1: the depthwise filters are the stream's channels
            stream.producers += depthwise
            stream.consumers.append(project)
        produced = _producers(shapes, f"{block}/project_conv", f"{block}/project_bn")
        if index == 1:  # a stage's first block: no shortcut, a new stream
            stream = _Draft(f"stage{stage}", produced)
            drafts.append(stream)
        else:
            stream.producers += produced
    stream.consumers.append(_consumer(shapes, "head_conv"))
    drafts.append(_Draft("head", _producers(shapes, "head_conv", "head_bn"),
                         [_consumer(shapes, "out")]))
    return drafts


def unit_groups(params: Any) -> list[UnitGroup]:
    """The unit groups of a network of one of the supported families, from its parameter
    paths (``params`` may be the parameters, a mask, or their shapes from ``jax.eval_shape``).

    Raises ConfigError (one line) for any other network.
    """
    shapes = {path: tuple(leaf.shape) for path, leaf in flatten(params).items()}
    children: dict[str, list[str]] = {}
    for path in shapes:
        parts = path.split("/")
        children.setdefault(parts[0], [])
        if len(parts) == 3 and parts[1] not in children[parts[0]]:
            children[parts[0]].append(parts[1])
    layers = list(children)
    if "head_conv" in children:
        drafts = _mobilenet_groups(children, shapes)
    elif "stem_conv" in children:
        drafts = _resnet_groups(children, shapes)
    else:
        drafts = _chain_groups(shapes, layers)
    return [_freeze(draft, shapes, layers) for draft in drafts]


def _freeze(draft: _Draft, shapes: dict[str, tuple[int, ...]], layers: list[str]) -> UnitGroup:
    path, axis = draft.producers[0]
    size = shapes[path][axis]
    for path, axis in draft.producers + draft.consumers:
        length = shapes[path][axis]
        consumer = (path, axis) in draft.consumers
        if length % size if consumer else length != size:
            raise _unsupported(layers, f"{path} has {length} slices for {size} units")
    return UnitGroup(draft.name, tuple(draft.producers), tuple(draft.consumers), size)


# --- units as slices --------------------------------------------------------------------------


def unit_slices(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` as ``(size, -1)``: row ``i`` holds every entry of unit ``i`` (along ``axis``,
    and, on a flattened (positions, channels) axis, at every position)."""
    moved = np.moveaxis(np.asarray(array), axis, 0)
    repeats = moved.shape[0] // size
    rows = moved.reshape(repeats, size, -1).transpose(1, 0, 2)
    return rows.reshape(size, -1)


def units_along(length: int, size: int, units: np.ndarray) -> np.ndarray:
    """Which of ``length`` slices along an axis belong to ``units`` (bool, ``length``)."""
    return np.isin(np.arange(length) % size, units)


def alive_in(group: UnitGroup, flat_mask: dict[str, np.ndarray]) -> np.ndarray:
    """Bool per unit: alive unless every producer entry of it is masked.

    A unit counts as pruned only when its kernel slices, bias and BatchNorm scale and bias
    are all False, which is exactly when its output is 0 and removing it is exact.
    """
    alive = np.zeros(group.size, dtype=bool)
    for path, axis in group.producers:
        alive |= unit_slices(flat_mask[path], axis, group.size).any(axis=1)
    return alive


def alive_units(mask: Mask) -> dict[str, int]:
    """Alive units per group name, for reports (e.g. ``{"fc1": 240, "fc2": 80}``)."""
    flat = flatten(mask)
    return {group.name: int(alive_in(group, flat).sum()) for group in unit_groups(mask)}


def unit_scores(
    group: UnitGroup, flat_params: dict[str, Any], flat_mask: dict[str, np.ndarray], norm: str
) -> np.ndarray:
    """Each unit's norm over its producer kernels' slices (masked weights count as 0).

    ``l1``: the sum of absolute values over all producer kernels of the group (for a residual
    stream: the stem or shortcut and every block's last convolution). ``l2``: the Euclidean
    norm of all of them together (the square root of the summed squares).
    """
    total = np.zeros(group.size, dtype=np.float64)
    for path, axis in group.kernels:
        weights = np.where(flat_mask[path], np.asarray(flat_params[path], np.float64), 0.0)
        rows = unit_slices(weights, axis, group.size)
        total += np.abs(rows).sum(axis=1) if norm == "l1" else np.square(rows).sum(axis=1)
    return total if norm == "l1" else np.sqrt(total)


# --- choosing the units -----------------------------------------------------------------------


def _layerwise_choice(scores: np.ndarray, alive: np.ndarray, fraction: float) -> np.ndarray:
    """The ``round(fraction * alive)`` lowest-scoring alive units, never the last one."""
    candidates = np.flatnonzero(alive)
    k = min(prune_count(fraction, len(candidates)), max(len(candidates) - 1, 0))
    return np.sort(candidates[np.argsort(scores[candidates], kind="stable")[:k]])


def _global_choice(
    scores: list[np.ndarray], alive: list[np.ndarray], fraction: float, by_mean: bool = True
) -> list[np.ndarray]:
    """The lowest of all groups' scores, each divided by its group's mean over alive units
    (``by_mean``; else ranked as they are, for scores already normalised per layer).

    Without the normalisation, layers of larger fan-in (larger norms) would never be pruned.
    Ranked by (normalised score, group, unit index); a unit whose group has one alive unit
    left is skipped, so exactly ``round(fraction * alive)`` units go whenever that many can.
    """
    keys, groups, units = [], [], []
    for g, (score, live) in enumerate(zip(scores, alive, strict=True)):
        candidates = np.flatnonzero(live)
        mean = score[candidates].mean() if by_mean and len(candidates) else 0.0
        keys.append(score[candidates] / mean if mean > 0 else score[candidates])
        groups.append(np.full(len(candidates), g))
        units.append(candidates)
    key, group, unit = (np.concatenate(a) for a in (keys, groups, units))
    k = prune_count(fraction, len(key))
    left = [int(live.sum()) for live in alive]
    chosen: list[list[int]] = [[] for _ in scores]
    for i in np.lexsort((unit, group, key)):
        if k == 0:
            break
        if left[group[i]] > 1:
            chosen[group[i]].append(int(unit[i]))
            left[group[i]] -= 1
            k -= 1
    return [np.array(sorted(c), dtype=int) for c in chosen]


def _kill(group: UnitGroup, flat_mask: dict[str, np.ndarray], units: np.ndarray) -> None:
    """Set every producer and consumer slice of ``units`` False, in place."""
    for path, axis in group.producers + group.consumers:
        view = np.moveaxis(flat_mask[path], axis, 0)
        view[units_along(view.shape[0], group.size, units)] = False


def structured_prune(
    params: Any,
    mask: Mask,
    fraction: float,
    scope: str = "layerwise",
    norm: str = "l1",
    scores: list[np.ndarray] | None = None,
) -> Mask:
    """The next mask: remove ``round(fraction * alive)`` units of lowest norm (see
    :func:`unit_scores`), per group (``layerwise``) or ranked across groups (``global``,
    scores divided by their group's mean so that layers compare).

    The last alive unit of a group is never pruned, so no layer collapses (a group with one
    unit alive keeps it, and a level may then remove fewer than asked). Ties go to the lower
    unit index first, as in magnitude pruning. Scores come from ``params`` as they are before
    this level (masked entries count as 0). A pruned unit's producer and consumer slices are
    all False; leaves in no group are unchanged. Returns a new mask of numpy bool arrays.
    ``scores`` (one array per group of :func:`unit_groups`) replace the norms (the Taylor
    criterion of :mod:`lottery.pruning.taylor`); ``global`` ranks them as given, not divided by
    their group's mean, which would cancel the Taylor scores' own per-layer L2 normalisation
    (Molchanov et al. 2017).
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"structured pruning fraction={fraction} must be in [0, 1)")
    if scope not in SCOPES:
        raise ConfigError(f"unknown structured pruning scope {scope!r}; choose one of {SCOPES}")
    if scores is None and norm not in NORMS:
        raise ConfigError(f"unknown structured pruning norm {norm!r}; choose one of {NORMS}")
    groups = unit_groups(params)
    flat_params = flatten(params)
    old = {path: np.asarray(m, dtype=bool) for path, m in flatten(mask).items()}
    alive = [alive_in(group, old) for group in groups]
    by_mean = scores is None  # given scores are normalised by their maker
    if scores is None:
        scores = [unit_scores(group, flat_params, old, norm) for group in groups]
    if scope == "layerwise":
        chosen = [_layerwise_choice(s, a, fraction) for s, a in zip(scores, alive, strict=True)]
    else:
        chosen = _global_choice(scores, alive, fraction, by_mean)
    new = {path: m.copy() for path, m in old.items()}
    for group, units in zip(groups, chosen, strict=True):
        _kill(group, new, units)
    return unflatten(new)


# --- whole blocks -----------------------------------------------------------------------------

BLOCK_FAMILIES = "resnet20/32/56/110, resnet18/34/50 and mobilenetv2(_cifar)"


def removable_blocks(params: Any) -> dict[str, str]:
    """The residual blocks whose removal keeps every shape (identity shortcut), each with its
    last BatchNorm layer, in network order: ``{"block1_2": "block1_2/bn2", ...}``.

    A ResNet block without ``shortcut_conv`` (its output is ``relu(bn(...) + x)`` with ``x``
    itself the output of a ReLU, so with that BatchNorm's scale and bias 0 the block passes
    ``x`` through exactly); a MobileNetV2 block after a stage's first (``y + x``, linear).
    Raises ConfigError (one line) for a network of another family, or one without any.
    """
    children: dict[str, set[str]] = {}
    for path in flatten(params):
        parts = path.split("/")
        children.setdefault(parts[0], set())
        if len(parts) == 3:
            children[parts[0]].add(parts[1])
    found = []
    for name, layers in children.items():
        match = _BLOCK.fullmatch(name)
        if match is None or "shortcut_conv" in layers:
            continue
        stage, index = int(match.group(1)), int(match.group(2))
        if "project_bn" in layers:  # MobileNetV2: a stage's first block has no shortcut
            if index > 1:
                found.append(((stage, index), name, f"{name}/project_bn"))
            continue
        norms = sorted(int(m.group(1)) for layer in layers if (m := _BN.fullmatch(layer)))
        if norms:
            found.append(((stage, index), name, f"{name}/bn{norms[-1]}"))
    if not found or "stem_conv" not in children:
        raise ConfigError(
            f"pruning.method=blocks removes residual blocks with an identity shortcut, of "
            f"{BLOCK_FAMILIES}; this network has none (layers {', '.join(list(children)[:6])});"
            " choose one of those models (e.g. model=resnet20) or another pruning.method"
        )
    return {name: bn for _, name, bn in sorted(found)}


def removed_blocks(params: Any, mask: Mask) -> list[str]:
    """The removable blocks (see :func:`removable_blocks`) that ``mask`` prunes whole."""
    flat = flatten(mask)
    return [
        block
        for block in removable_blocks(params)
        if not any(np.any(m) for path, m in flat.items() if path.startswith(f"{block}/"))
    ]


def block_scores(params: Any, mask: Mask) -> dict[str, float]:
    """Each removable block's score: the L1 norm of its last BatchNorm's scale (masked
    entries count as 0). That scale multiplies everything the block adds to its shortcut,
    so a small one means a block close to the identity (the criterion of network slimming,
    Liu et al. 2017, taken per block)."""
    flat_params, flat_mask = flatten(params), flatten(mask)
    scores = {}
    for block, bn in removable_blocks(params).items():
        scale = np.where(flat_mask[f"{bn}/scale"], np.asarray(flat_params[f"{bn}/scale"]), 0.0)
        scores[block] = float(np.abs(scale.astype(np.float64)).sum())
    return scores


def block_prune(params: Any, mask: Mask, fraction: float) -> Mask:
    """The next mask: ``round(fraction * alive)`` of the alive removable blocks, those of
    lowest :func:`block_scores` (ties: the earlier block), pruned whole (every leaf False).
    A pruned block then outputs its input, and compaction leaves it out of the module."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"pruning.fraction={fraction} must be in [0, 1) for blocks")
    gone = set(removed_blocks(params, mask))
    scores = {b: s for b, s in block_scores(params, mask).items() if b not in gone}
    order = sorted(scores, key=lambda block: scores[block])  # stable: network order on ties
    chosen = order[: prune_count(fraction, len(order))]
    new = {path: np.asarray(m, dtype=bool).copy() for path, m in flatten(mask).items()}
    for path in new:
        if path.split("/", 1)[0] in chosen:
            new[path][...] = False
    return unflatten(new)
