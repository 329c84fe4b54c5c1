"""Pruning at initialisation: score every prunable weight once, before training, keep the best.

The methods compared by Frankle et al. 2021 ("Pruning Neural Networks at Initialization: Why
are We Missing the Mark?"), each a score per weight where a HIGHER score means KEEP:

- ``snip`` (Lee et al. 2019): ``|g ⊙ w|``, the loss gradient ``g`` averaged over the batches.
- ``grasp`` (Wang et al. 2020): ``w ⊙ Hg``, the negation of the paper's ``S(-w) = -w ⊙ Hg``
  (the paper removes the weights with the highest ``S``; see :func:`grasp_scores`), with the
  logits divided by a temperature (200, as the reference code) in both passes.
- ``synflow`` (Tanaka et al. 2020): ``|∂R/∂θ ⊙ θ|`` where ``R`` is the sum of the logits of the
  network with every parameter and BatchNorm statistic replaced by its absolute value, on an
  input of ones. Data-free, and iterative in :func:`prune_at_init`: ``synflow_rounds`` rounds
  on an exponential schedule.
- ``magnitude_init``: ``|w|``.
- ``random``: uniform random scores, so the kept weights are a uniformly random subset.

Scores are computed on ``params ⊙ mask`` (pruned weights are exactly 0) and only the prunable
leaves are differentiated (the others are held fixed), as in the reference implementations.
By default (``score_mode="eval"``) the network runs in evaluation mode with the given
BatchNorm statistics, as Tanaka et al.'s code does for all of these pruners (its
``prune_loop`` calls ``model.eval()`` unless ``train_mode``, False by default) and as the
SNIP authors' code does (``is_train: False`` when it prunes): the scores then depend on the
weights and the batches only, not on how the batches happen to be split. Freshly initialised
statistics (mean 0, variance 1) make BatchNorm an affine map. ``score_mode="train"`` runs the
network as in training instead (the GraSP authors' code scores a fresh, hence train-mode,
copy of the model): each BatchNorm normalises by the statistics of the batch it is given
(SynFlow's: its one input of ones). Either way the running statistics are only read: the
statistics a scoring pass would compute are dropped, so the level trains from the weights and
statistics it was given. Without BatchNorm the two modes are the same computation.

The selection is exact and on the host: :func:`prune_at_init` keeps exactly ``keep`` of the
prunable weights alive in ``mask``, those of highest score ranked globally over all prunable
paths; ties go to the earlier path (sorted order), then the lower flat index, as in
:func:`lottery.pruning.magnitude.prune_group`. With ``distribution="erk"`` each layer keeps
its own Erdős–Rényi-Kernel count (:mod:`lottery.pruning.erk`) of the same total, its
highest-scoring weights ranked within the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lottery.config import ConfigError, RunError
from lottery.models.network import BatchStats, Network, Params
from lottery.pruning.erk import check_distribution, erk_keeps
from lottery.pruning.mask import Mask, apply_mask, flatten, unflatten
from lottery.pruning.topk import choose_alive

METHODS = ("snip", "grasp", "synflow", "magnitude_init", "random")
# Methods that rescore on the current mask between rounds (see :func:`synflow_schedule`).
ITERATED = frozenset({"synflow"})
# How the network runs while it is scored (see the module docstring).
SCORE_MODES = ("eval", "train")
# GraSP's softmax temperature in both passes, as in Wang et al.'s and Synaptic-Flow's code.
GRASP_TEMPERATURE = 200.0

Batch = tuple[jax.Array, jax.Array]
Weights = dict[str, jax.Array]  # the prunable leaves, by path
Scores = dict[str, np.ndarray]


def _split(flat: dict, prunable: list[str]) -> tuple[Weights, Weights]:
    """Flat params as (prunable leaves, the other leaves), both by path."""
    weights = {p: flat[p] for p in prunable}
    others = {p: v for p, v in flat.items() if p not in weights}
    return weights, others


def _masked_on_host(params: Params, mask: Mask) -> dict[str, np.ndarray]:
    """``params ⊙ mask`` flattened, in NumPy (pruned weights exactly +0.0)."""
    flat_mask = flatten(mask)
    return {
        p: np.where(flat_mask[p], np.asarray(v), np.zeros((), np.asarray(v).dtype))
        for p, v in flatten(params).items()
    }


def _loss(
    network: Network,
    train: bool,
    weights: Weights,
    others: Weights,
    batch_stats: BatchStats,
    x: jax.Array,
    y: jax.Array,
    temperature: float = 1.0,
) -> jax.Array:
    """Mean softmax cross-entropy of the logits divided by ``temperature``, as a function of
    the prunable leaves (and the others). In train mode BatchNorm uses the batch's statistics;
    the statistics it would update are dropped (``batch_stats`` is only read)."""
    params = unflatten({**others, **weights})
    logits, _ = network.apply(params, batch_stats, x, train=train)
    return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, y).mean()


# Compiled once per network (a hashable frozen dataclass, hence static), mode and shapes.
_grad = jax.jit(jax.grad(_loss, argnums=2), static_argnums=(0, 1))


@partial(jax.jit, static_argnums=(0, 1))
def _hessian_vector(
    network: Network,
    train: bool,
    weights: Weights,
    others: Weights,
    batch_stats: BatchStats,
    x: jax.Array,
    y: jax.Array,
    v: Weights,
    temperature: float = 1.0,
) -> Weights:
    """``H v`` with ``H`` the Hessian of one batch's loss: forward-over-reverse (jvp of grad)."""

    def grad(w: Weights) -> Weights:
        return jax.grad(_loss, argnums=2)(
            network, train, w, others, batch_stats, x, y, temperature
        )

    return jax.jvp(grad, (weights,), (v,))[1]


def is_train_mode(score_mode: str) -> bool:
    """Whether ``score_mode`` (``eval`` or ``train``, else a ConfigError) scores in train mode."""
    if score_mode not in SCORE_MODES:
        raise ConfigError(
            f"unknown pruning.score_mode {score_mode!r}; choose one of {', '.join(SCORE_MODES)}"
        )
    return score_mode == "train"


def _check_batches(method: str, batches: Sequence[Batch]) -> None:
    if len(batches) == 0:
        raise ValueError(f"{method} needs at least one batch of (inputs, labels); got none")


def _batch_mean(per_batch: Callable[[jax.Array, jax.Array], Weights], batches) -> Weights:
    """The mean over ``batches`` of ``per_batch(x, y)`` (each batch weighs the same)."""
    total = None
    for x, y in batches:
        value = {p: np.asarray(v) for p, v in per_batch(x, y).items()}
        total = value if total is None else {p: total[p] + value[p] for p in total}
    return {p: t / np.float32(len(batches)) for p, t in total.items()}


def snip_scores(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    prunable: list[str],
    batches: Sequence[Batch],
    score_mode: str = "eval",
) -> Scores:
    """SNIP (Lee et al. 2019): ``|g ⊙ w|`` with ``g`` the loss gradient averaged over batches,
    the network run in ``score_mode`` (see the module docstring)."""
    _check_batches("snip", batches)
    train = is_train_mode(score_mode)
    weights, others = _split(_masked_on_host(params, mask), prunable)
    g = _batch_mean(
        lambda x, y: _grad(network, train, weights, others, batch_stats, x, y), batches
    )
    return {p: np.abs(g[p] * weights[p]) for p in prunable}


def grasp_scores(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    prunable: list[str],
    batches: Sequence[Batch],
    temperature: float = GRASP_TEMPERATURE,
    score_mode: str = "eval",
) -> Scores:
    """GraSP (Wang et al. 2020): ``w ⊙ Hg``, higher = keep.

    ``g`` is the loss gradient averaged over the batches and ``Hg`` the Hessian of the same
    average loss times ``g`` (forward-over-reverse: ``jax.jvp`` of the gradient), both over the
    prunable weights. The paper (eq. 8) scores ``S(-w) = -w ⊙ Hg``, the change in gradient flow
    when a weight is removed, and removes the weights with the HIGHEST ``S`` (as does its
    reference code: ``-weight * grad`` then ``keep = score <= threshold``). Keeping the highest
    ``-S = w ⊙ Hg`` is the same mask. As in the reference code (the GraSP authors' and
    Synaptic-Flow's), the loss of both passes is taken on the logits divided by
    ``temperature`` (T=200 there); T=1 is the plain loss. The reference sums over batches
    and divides the scores by ``|Σ scores|``: positive factors, the same ranking. The network
    runs in ``score_mode`` (see the module docstring).
    """
    _check_batches("grasp", batches)
    train = is_train_mode(score_mode)
    weights, others = _split(_masked_on_host(params, mask), prunable)
    t = np.float32(temperature)
    g = _batch_mean(
        lambda x, y: _grad(network, train, weights, others, batch_stats, x, y, t), batches
    )
    hg = _batch_mean(
        lambda x, y: _hessian_vector(network, train, weights, others, batch_stats, x, y, g, t),
        batches,
    )
    # Keep-score = -S(-w) = w ⊙ Hg (Wang et al. 2020, eq. 8; they prune the highest S).
    return {p: weights[p] * hg[p] for p in prunable}


@partial(jax.jit, static_argnums=(0, 1, 2))
def _synflow(
    network: Network,
    prunable: tuple[str, ...],
    train: bool,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
) -> Weights:
    weights, others = _split(flatten(apply_mask(params, mask)), list(prunable))
    weights = {p: jnp.abs(w) for p, w in weights.items()}
    others = {p: jnp.abs(w) for p, w in others.items()}
    # The reference's ``linearize`` takes |.| of the whole state_dict, buffers included: the
    # BatchNorm running means too (the variances are positive already).
    batch_stats = jax.tree.map(jnp.abs, batch_stats)
    ones = jnp.ones((1, *network.input_shape), jnp.float32)

    def objective(weights: Weights) -> jax.Array:
        params = unflatten({**others, **weights})
        logits, _ = network.apply(params, batch_stats, ones, train=train)
        return jnp.sum(logits)

    grads = jax.grad(objective)(weights)
    return {p: jnp.abs(grads[p] * weights[p]) for p in prunable}


def synflow_scores(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    prunable: list[str],
    score_mode: str = "eval",
) -> Scores:
    """SynFlow (Tanaka et al. 2020), one round: ``|∂R/∂θ ⊙ θ|``.

    Every parameter (biases and BatchNorm scales too) and every BatchNorm statistic (the
    running means, which a rewind point k > 0 makes nonzero) is replaced by its absolute value
    under the mask, as the reference code's ``linearize`` does to the whole ``state_dict``; the
    network runs on one input of ones, and ``R`` is the sum of the logits. In
    ``score_mode="train"`` each BatchNorm normalises by the statistics of that one input (over
    its positions; a Dense layer's BatchNorm then outputs its shift alone), as the reference's
    ``train_mode`` does.
    In float32 (as the reference code): ``R`` is a product over layers and can overflow for
    very deep or wide networks; :func:`prune_at_init` then stops with a RunError.
    """
    train = is_train_mode(score_mode)
    scores = _synflow(network, tuple(prunable), train, params, batch_stats, mask)
    return {p: np.asarray(s) for p, s in scores.items()}


def magnitude_init_scores(params: Params, mask: Mask, prunable: list[str]) -> Scores:
    """``|w|`` under the mask."""
    weights, _ = _split(_masked_on_host(params, mask), prunable)
    return {p: np.abs(weights[p]) for p in prunable}


def random_scores(params: Params, prunable: list[str], key: jax.Array) -> Scores:
    """Uniform scores in [0, 1): one draw for all of ``prunable`` (in its order), split."""
    flat = flatten(params)
    shapes = [np.shape(flat[p]) for p in prunable]
    sizes = [math.prod(shape) for shape in shapes]
    draw = np.asarray(jax.random.uniform(key, (sum(sizes),)))
    pieces = np.split(draw, np.cumsum(sizes)[:-1]) if sizes else []
    return {
        p: piece.reshape(shape) for p, piece, shape in zip(prunable, pieces, shapes, strict=True)
    }


# The scorer of each method, all called alike: (network, params, batch_stats, mask, prunable,
# batches, key, grasp_temperature, score_mode) -> scores; each ignores what it does not read.
Scorer = Callable[..., Scores]
SCORERS: dict[str, Scorer] = {
    "snip": lambda net, p, bs, m, paths, batches, key, temp, mode: snip_scores(
        net, p, bs, m, paths, batches, mode
    ),
    "grasp": lambda net, p, bs, m, paths, batches, key, temp, mode: grasp_scores(
        net, p, bs, m, paths, batches, temp, mode
    ),
    "synflow": lambda net, p, bs, m, paths, batches, key, temp, mode: synflow_scores(
        net, p, bs, m, paths, mode
    ),
    "magnitude_init": lambda net, p, bs, m, paths, batches, key, temp, mode: (
        magnitude_init_scores(p, m, paths)
    ),
    "random": lambda net, p, bs, m, paths, batches, key, temp, mode: random_scores(p, paths, key),
}


def _check_method(method: str) -> None:
    if method not in SCORERS:
        choices = ", ".join(METHODS)
        raise ConfigError(f"unknown pruning-at-init method {method!r}; choose one of {choices}")


def at_init_scores(
    method: str,
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    prunable: list[str],
    batches: Sequence[Batch],
    key: jax.Array,
    grasp_temperature: float = GRASP_TEMPERATURE,
    score_mode: str = "eval",
) -> dict[str, np.ndarray]:
    """Per prunable path, a float score array shaped like the weight; HIGHER = KEEP.

    ``batches`` are used by ``snip`` and ``grasp``, ``key`` by ``random``,
    ``grasp_temperature`` by ``grasp``, and ``score_mode`` (how the network runs: ``eval`` or
    ``train``) by ``snip``, ``grasp`` and ``synflow``; the others ignore them. ``synflow``
    here is one round (single shot); :func:`prune_at_init` iterates it.
    """
    _check_method(method)
    prunable = sorted(prunable)
    return SCORERS[method](
        network, params, batch_stats, mask, prunable, batches, key, grasp_temperature, score_mode
    )


def keep_top(
    scores: dict[str, np.ndarray], mask: Mask, prunable: list[str], keep: int, method: str = ""
) -> Mask:
    """``mask`` with only the ``keep`` alive prunable weights of highest score left alive.

    Ranked globally over ``prunable``; ties go to the earlier path (sorted), then the lower
    flat index. Non-prunable leaves are copied unchanged. Non-finite scores of alive weights
    are a RunError (the ranking would be meaningless).
    """
    paths = sorted(prunable)
    flat = {p: np.array(m, dtype=bool, copy=True) for p, m in flatten(mask).items()}
    _check_keep(keep, sum(int(np.count_nonzero(flat[p])) for p in paths))
    bad = [p for p in paths if not np.all(np.isfinite(_alive_scores(scores[p], flat[p])))]
    if bad:
        raise RunError(
            f"pruning at init ({method or 'scores'}) gave non-finite scores in {', '.join(bad)}; "
            "a float32 overflow (SynFlow on a very deep net) or non-finite params or inputs"
        )
    for path, kept in choose_alive(scores, flat, paths, keep, lowest=False).items():
        new = np.zeros(flat[path].size, dtype=bool)
        new[kept] = True
        flat[path] = new.reshape(flat[path].shape)
    return unflatten(flat)


def _alive_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).ravel()[np.asarray(mask).ravel()]


def _check_keep(keep: int, alive: int) -> None:
    if not 0 <= keep <= alive:
        raise ValueError(
            f"cannot keep {keep} weights: it must be between 0 and the {alive} prunable "
            "weights still alive"
        )


def synflow_schedule(alive: int, keep: int, rounds: int) -> list[int]:
    """Weights kept after each SynFlow round: ``round(alive * (keep/alive)^(r/rounds))``.

    The exponential schedule of Tanaka et al. 2020, rounded half up, for r = 1..rounds; never
    below ``keep`` and exactly ``keep`` after the last round.
    """
    if rounds < 1:
        raise ValueError(f"synflow needs at least 1 round; got synflow_rounds={rounds}")
    _check_keep(keep, alive)
    if alive == 0:
        return [0] * rounds
    ratio = keep / alive
    counts = [max(keep, math.floor(alive * ratio ** (r / rounds) + 0.5)) for r in range(1, rounds)]
    return [*counts, keep]


def keep_top_per_layer(
    scores: dict[str, np.ndarray], mask: Mask, keeps: dict[str, int], method: str = ""
) -> Mask:
    """``mask`` with, in each path of ``keeps``, only its ``keeps[path]`` alive weights of
    highest score left alive (ranked within the layer, ties to the lower flat index)."""
    for path in sorted(keeps):
        mask = keep_top(scores, mask, [path], keeps[path], method)
    return mask


def layer_keeps(params: Params, mask: Mask, prunable: list[str], keep: int) -> dict[str, int]:
    """ERK's count per prunable layer for ``keep`` in total, at most the layer's alive."""
    flat, alive = flatten(params), flatten(mask)
    keeps = erk_keeps({p: tuple(np.shape(flat[p])) for p in prunable}, keep)
    return {p: min(k, int(np.count_nonzero(alive[p]))) for p, k in keeps.items()}


def _synflow_prune(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    prunable: list[str],
    keep: int,
    rounds: int,
    score_mode: str,
    keeps: dict[str, int] | None = None,
) -> Mask:
    """Iterative SynFlow: rescore on the current mask before each round's pruning; with
    ``keeps`` (per layer), each layer follows its own exponential schedule to its count."""
    flat = flatten(mask)
    if keeps is None:
        alive = sum(int(np.count_nonzero(flat[p])) for p in prunable)
        for target in synflow_schedule(alive, keep, rounds):
            scores = synflow_scores(network, params, batch_stats, mask, prunable, score_mode)
            mask = keep_top(scores, mask, prunable, target, "synflow")
        return mask
    schedules = {
        p: synflow_schedule(int(np.count_nonzero(flat[p])), k, rounds) for p, k in keeps.items()
    }
    for r in range(rounds):
        scores = synflow_scores(network, params, batch_stats, mask, prunable, score_mode)
        mask = keep_top_per_layer(scores, mask, {p: schedules[p][r] for p in keeps}, "synflow")
    return mask


def prune_at_init(
    method: str,
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    prunable: list[str],
    batches: Sequence[Batch],
    key: jax.Array,
    keep: int,
    synflow_rounds: int = 100,
    grasp_temperature: float = GRASP_TEMPERATURE,
    score_mode: str = "eval",
    distribution: str = "uniform",
) -> Mask:
    """A new mask keeping exactly ``keep`` of the prunable weights alive in ``mask``.

    The ``keep`` of highest score (:func:`at_init_scores`), ranked globally over all prunable
    paths, ties to the earlier path then the lower flat index. ``synflow`` prunes in
    ``synflow_rounds`` rounds, rescoring each time (see :func:`synflow_schedule`); ``grasp``
    divides the logits by ``grasp_temperature``; ``snip``, ``grasp`` and ``synflow`` run the
    network in ``score_mode``. ``distribution="erk"``: each layer keeps its ERK count of
    ``keep`` instead (:func:`layer_keeps`; the total then ``keep`` to within the rounding of
    the layers), ranked within the layer. Non-prunable leaves are copied unchanged; ``mask``,
    ``params`` and ``batch_stats`` themselves are not modified.
    """
    _check_method(method)
    prunable = sorted(prunable)
    alive = sum(int(np.count_nonzero(flatten(mask)[p])) for p in prunable)
    _check_keep(keep, alive)
    keeps = None
    if check_distribution(distribution) == "erk":
        keeps = layer_keeps(params, mask, prunable, keep)
    if method in ITERATED:
        return _synflow_prune(
            network, params, batch_stats, mask, prunable, keep, synflow_rounds, score_mode, keeps
        )
    scores = at_init_scores(
        method, network, params, batch_stats, mask, prunable, batches, key, grasp_temperature,
        score_mode,
    )
    if keeps is not None:
        return keep_top_per_layer(scores, mask, keeps, method)
    return keep_top(scores, mask, prunable, keep, method)


__all__ = [
    "GRASP_TEMPERATURE",
    "METHODS",
    "SCORE_MODES",
    "at_init_scores",
    "grasp_scores",
    "is_train_mode",
    "keep_top",
    "keep_top_per_layer",
    "layer_keeps",
    "magnitude_init_scores",
    "prune_at_init",
    "random_scores",
    "snip_scores",
    "synflow_schedule",
    "synflow_scores",
]
