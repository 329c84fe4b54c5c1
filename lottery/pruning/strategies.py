"""Pruning strategies by name: ``pruning.method`` picks one from :data:`STRATEGIES`.

A strategy reads its own keys of the shared ``pruning`` config into typed settings (checking
them, and rejecting keys it does not read) and gives level L's mask from what level L-1 left
(:class:`PruneInputs`). The families:

- ``magnitude``: iterative magnitude pruning (global or layer-wise), with Zhou et al.'s
  criteria; ``oneshot``: the same counts, but always ranked by the dense network's trained
  weights, so level L is level 0 pruned in one shot to level L's sparsity.
- ``structured``: whole neurons and channels by the norm of their weights.
- ``gradual``: inside one training (level 1), by tfmot's polynomial schedule.
- at initialisation: ``snip``, ``grasp``, ``synflow``, ``magnitude_init``, ``random``
  (Frankle et al. 2021): level L keeps as many weights as IMP's level L, chosen from the
  scores at the rewind point, then trained once.

Every method except ``gradual`` removes exactly ``round(fraction * n)`` of the ``n`` weights
(or units) still alive per level, so the methods meet at the same sparsities.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lottery.config import ConfigError, PruningConfig, to_iterations
from lottery.pruning.gradual import PolynomialDecay, gradual_mask
from lottery.pruning.magnitude import (
    CRITERIA,
    criterion_scores,
    magnitude_prune,
    prune_count,
    pruning_groups,
)
from lottery.pruning.mask import Mask, count_alive, flatten, full_mask

# Keys of ``pruning`` every strategy reads (what to prune, how often, where to rewind).
COMMON_KEYS = frozenset({"method", "levels", "rewind_step", "prunable", "max_accuracy_drop"})
SCOPES = ("global", "layerwise")
NORMS = ("l1", "l2")
SCORE_MODES = ("eval", "train")  # how the network runs while scored (pruning.score_mode)
# Pruning at initialisation, by method: the ``pruning`` keys each reads besides the fraction
# (SNIP's and GraSP's scores take gradients on training examples; SynFlow iterates).
AT_INIT: dict[str, frozenset[str]] = {
    "snip": frozenset({"score_examples", "score_mode"}),
    "grasp": frozenset({"score_examples", "grasp_temperature", "score_mode"}),
    "synflow": frozenset({"synflow_rounds", "score_mode"}),
    "magnitude_init": frozenset(),
    "random": frozenset(),
}

# Weights a level prunes, per group pruned on its own: (rate, prunable weights of the group).
WeightGroups = list[tuple[float, int]]


@dataclass
class PruneInputs:
    """What a strategy may look at to choose level ``level``'s mask. The costly inputs are
    functions, called only by the strategies that need them."""

    level: int
    params: Any  # level L-1's trained weights
    mask: Mask  # level L-1's mask
    prunable: list[str]
    start: Callable[[], tuple[Any, Any]]  # (weights, BatchNorm statistics) at the rewind point
    dense: Callable[[], Any]  # level 0's trained weights
    network: Any = None
    batches: Callable[[int], Sequence[tuple[Any, Any]]] = field(default=lambda n: [])
    key: Any = None  # a jax PRNG key of this level, for random choices
    batch_stats: Any = field(default_factory=dict)  # level L-1's BatchNorm statistics


@dataclass(frozen=True)
class Timeline:
    """What step strings mean in this run (known once the data is loaded)."""

    steps_per_epoch: int
    total_steps: int

    def iterations(self, value: str, key: str) -> int:
        return to_iterations(value, self.steps_per_epoch, key)


# -- magnitude and oneshot ---------------------------------------------------------------


@dataclass(frozen=True)
class MagnitudeSettings:
    """Remove ``fraction`` of the remaining weights of lowest score per level."""

    fraction: float
    scope: str
    layer_fractions: dict[str, float]
    criterion: str = "magnitude"
    score_examples: int = 100  # taylor: training examples the gradients are taken on
    score_mode: str = "eval"  # taylor: how the network runs while scored


def _check_scope(cfg: PruningConfig) -> None:
    if cfg.scope not in SCOPES:
        raise ConfigError(f"unknown pruning.scope {cfg.scope!r}; choose one of {', '.join(SCOPES)}")


def _criterion(cfg: PruningConfig, choices: tuple[str, ...]) -> str:
    """``pruning.criterion``, or the method's default (the first choice) when unset."""
    criterion = cfg.criterion or choices[0]
    if criterion not in choices:
        raise ConfigError(
            f"unknown pruning.criterion {criterion!r} for pruning.method={cfg.method!r}; "
            f"choose one of {', '.join(choices)}"
        )
    return criterion


def _check_taylor_only(cfg: PruningConfig, criterion: str, key: str) -> None:
    """One ConfigError line if ``pruning.<key>``, which only the Taylor criterion reads, is
    set (not its default) under another criterion, where it would silently change nothing."""
    value = getattr(cfg, key)
    if criterion != "taylor" and value != getattr(PruningConfig(), key):
        raise ConfigError(
            f"pruning.{key}={value} applies to pruning.criterion=taylor, not {criterion}; "
            "remove it or choose taylor"
        )


def _check_score_examples(cfg: PruningConfig) -> None:
    if cfg.score_examples < 1:
        raise ConfigError(f"pruning.score_examples={cfg.score_examples} must be at least 1")


def _score_mode(cfg: PruningConfig, own: str = "eval") -> str:
    """``pruning.score_mode``, or the method's ``own`` when unset, checked."""
    mode = cfg.score_mode or own
    if mode not in SCORE_MODES:
        raise ConfigError(
            f"unknown pruning.score_mode {cfg.score_mode!r}; choose one of {', '.join(SCORE_MODES)}"
        )
    return mode


def _magnitude_settings(cfg: PruningConfig, timeline: Timeline | None) -> MagnitudeSettings:
    _check_scope(cfg)
    criterion = _criterion(cfg, (*CRITERIA, "taylor"))
    _check_taylor_only(cfg, criterion, "score_examples")
    _check_score_examples(cfg)
    _check_taylor_only(cfg, criterion, "score_mode")
    return MagnitudeSettings(
        cfg.fraction, cfg.scope, dict(cfg.layer_fractions), criterion, cfg.score_examples,
        _score_mode(cfg),
    )


def _magnitude(inputs: PruneInputs, s: MagnitudeSettings) -> Mask:
    if s.criterion == "taylor":  # |w · g| at the trained weights (Molchanov et al. 2017)
        from lottery.pruning.at_init import snip_scores

        scores = snip_scores(
            inputs.network, inputs.params, inputs.batch_stats, inputs.mask, inputs.prunable,
            inputs.batches(s.score_examples), s.score_mode,
        )
    else:
        start = inputs.start()[0] if s.criterion != "magnitude" else None
        scores = criterion_scores(s.criterion, inputs.params, start)
    return magnitude_prune(
        inputs.params,
        inputs.mask,
        inputs.prunable,
        s.scope,
        s.fraction,
        s.layer_fractions,
        scores,
    )


def _oneshot_settings(cfg: PruningConfig, timeline: Timeline | None) -> MagnitudeSettings:
    # One-shot ranks the dense network's weights by a criterion of weights alone: Taylor
    # scores need the network and batches at each level's weights (pruning.method=magnitude).
    _criterion(cfg, CRITERIA)
    return _magnitude_settings(cfg, timeline)


def _oneshot(inputs: PruneInputs, s: MagnitudeSettings) -> Mask:
    # Level L-1's mask kept the top of the same ranking, so pruning ``fraction`` of its
    # survivors keeps exactly the top of the dense weights at level L's count.
    dense = inputs.dense()
    start = inputs.start()[0] if s.criterion != "magnitude" else None
    scores = criterion_scores(s.criterion, dense, start)
    return magnitude_prune(
        dense, inputs.mask, inputs.prunable, s.scope, s.fraction, s.layer_fractions, scores
    )


def _check_magnitude(params: Any, prunable: list[str], s: MagnitudeSettings) -> None:
    # Rate 0 prunes nothing (no sort of every weight) but checks layer_fractions' keys.
    magnitude_prune(params, full_mask(params), prunable, s.scope, 0.0, s.layer_fractions)


def _magnitude_groups(params: Any, prunable: list[str], s: MagnitudeSettings) -> WeightGroups:
    sizes = {path: int(np.size(value)) for path, value in flatten(params).items()}
    groups = pruning_groups(prunable, s.scope, s.fraction, s.layer_fractions)
    return [(rate, sum(sizes[path] for path in paths)) for rate, paths in groups]


# -- structured --------------------------------------------------------------------------


@dataclass(frozen=True)
class StructuredSettings:
    """Remove ``fraction`` of the remaining neurons / channels of lowest score per level:
    their weights' norm, or the Taylor criterion (Molchanov et al. 2017)."""

    fraction: float
    scope: str
    norm: str
    score_examples: int = 100
    flops_weight: float = 0.0
    score_mode: str = "train"  # taylor: as while fine-tuning (Molchanov et al. 2017)


def _structured_settings(cfg: PruningConfig, timeline: Timeline | None) -> StructuredSettings:
    _check_scope(cfg)
    criterion = _criterion(cfg, (*NORMS, "taylor"))
    _check_taylor_only(cfg, criterion, "score_examples")
    _check_score_examples(cfg)
    _check_taylor_only(cfg, criterion, "taylor_flops_weight")
    _check_taylor_only(cfg, criterion, "score_mode")
    if cfg.taylor_flops_weight < 0:
        raise ConfigError(
            f"pruning.taylor_flops_weight={cfg.taylor_flops_weight} must be >= 0 (0 ranks by "
            "the Taylor criterion alone)"
        )
    return StructuredSettings(
        cfg.fraction, cfg.scope, criterion, cfg.score_examples, cfg.taylor_flops_weight,
        _score_mode(cfg, own="train"),
    )


def _structured(inputs: PruneInputs, s: StructuredSettings) -> Mask:
    from lottery.pruning.structured import structured_prune, unit_groups

    scores = None
    if s.norm == "taylor":
        from lottery.pruning.taylor import taylor_scores, unit_flops

        groups = unit_groups(inputs.params)
        flops = unit_flops(inputs.network, inputs.params, groups) if s.flops_weight else None
        scores = taylor_scores(
            inputs.network, inputs.params, inputs.batch_stats, inputs.mask, groups,
            inputs.batches(s.score_examples), flops, s.flops_weight, s.score_mode,
        )
    return structured_prune(inputs.params, inputs.mask, s.fraction, s.scope, s.norm, scores)


def _check_structured(params: Any, prunable: list[str], s: StructuredSettings) -> None:
    from lottery.pruning.structured import unit_groups

    unit_groups(params)  # one line if this network's units are not known


# -- gradual -----------------------------------------------------------------------------


def _gradual_settings(cfg: PruningConfig, timeline: Timeline | None) -> PolynomialDecay | None:
    for key in ("initial_sparsity", "final_sparsity"):
        value = getattr(cfg, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"pruning.{key}={value} must be in [0, 1)")
    if cfg.final_sparsity < cfg.initial_sparsity:
        raise ConfigError(
            f"pruning.final_sparsity={cfg.final_sparsity} is below pruning.initial_sparsity="
            f"{cfg.initial_sparsity}; gradual pruning only adds to the mask"
        )
    if cfg.power < 1:
        raise ConfigError(f"pruning.power={cfg.power} must be at least 1 (tfmot's default is 3)")
    if cfg.levels != 1:
        raise ConfigError(
            f"pruning.levels={cfg.levels} does not apply to pruning.method=gradual, which "
            "prunes inside one training; set pruning.levels=1"
        )
    if timeline is None:
        return None
    begin = timeline.iterations(cfg.begin_step, "pruning.begin_step")
    end = timeline.iterations(cfg.end_step, "pruning.end_step")
    frequency = timeline.iterations(cfg.frequency, "pruning.frequency")
    if frequency < 1:
        raise ConfigError(f"pruning.frequency={cfg.frequency!r} must be at least one iteration")
    if not begin < end < timeline.total_steps:
        raise ConfigError(
            f"pruning.begin_step={cfg.begin_step!r} ({begin} it) and pruning.end_step="
            f"{cfg.end_step!r} ({end} it) must satisfy begin < end < train.steps "
            f"({timeline.total_steps} it)"
        )
    schedule = PolynomialDecay(
        cfg.initial_sparsity, cfg.final_sparsity, begin, end, frequency, cfg.power
    )
    rewind = timeline.iterations(cfg.rewind_step, "pruning.rewind_step")
    first_update = schedule.pruning_steps()[0] - 1  # tfmot's step t: after t - 1 steps
    if rewind > first_update:
        raise ConfigError(
            f"pruning.rewind_step={cfg.rewind_step!r} ({rewind} it) is after the schedule's "
            f"first mask update (pruning.begin_step={cfg.begin_step!r}, made after "
            f"{first_update} it: tfmot prunes at step t after t - 1 gradient steps); level 1 "
            f"trains from the rewind step and would skip it; rewind to at most {first_update}it"
        )
    return schedule


def _gradual(inputs: PruneInputs, s: PolynomialDecay) -> Mask:
    return inputs.mask  # the training prunes (see :func:`mask_updates`)


def _check_nothing(params: Any, prunable: list[str], settings: Any) -> None:
    return None


def mask_updates(
    strategy: Strategy, settings: Any, prunable: list[str], start: int, end: int
) -> tuple[list[int], Callable[[int, Any, Mask], Mask]] | None:
    """For a strategy that prunes during training: the steps in ``[start, end)`` at which the
    mask changes and ``update(step, params, mask) -> mask``; None for the others."""
    if strategy.training_updates is None:
        return None
    return strategy.training_updates(settings, prunable, start, end)


def _gradual_updates(
    settings: PolynomialDecay, prunable: list[str], start: int, end: int
) -> tuple[list[int], Callable[[int, Any, Mask], Mask]]:
    def update(step: int, params: Any, mask: Mask) -> Mask:
        return gradual_mask(params, mask, prunable, settings.sparsity_after(step))

    return settings.update_steps(start, end), update


# -- at initialisation -------------------------------------------------------------------


@dataclass(frozen=True)
class AtInitSettings:
    """Keep IMP's count of weights per level, by scores at the rewind point."""

    method: str
    fraction: float
    synflow_rounds: int
    score_examples: int
    grasp_temperature: float = 200.0
    score_mode: str = "eval"


def _at_init_settings(cfg: PruningConfig, timeline: Timeline | None) -> AtInitSettings:
    if cfg.synflow_rounds < 1:
        raise ConfigError(f"pruning.synflow_rounds={cfg.synflow_rounds} must be at least 1")
    _check_score_examples(cfg)
    if not 0 < cfg.grasp_temperature < math.inf:
        raise ConfigError(
            f"pruning.grasp_temperature={cfg.grasp_temperature} must be a positive number "
            "(200 as in GraSP's reference code, 1 for the plain loss)"
        )
    return AtInitSettings(
        cfg.method, cfg.fraction, cfg.synflow_rounds, cfg.score_examples, cfg.grasp_temperature,
        _score_mode(cfg),
    )


def _at_init_groups(params: Any, prunable: list[str], s: AtInitSettings) -> WeightGroups:
    return [(s.fraction, count_alive(full_mask(params), prunable))]  # one count, as IMP's


def _at_init(inputs: PruneInputs, s: AtInitSettings) -> Mask:
    from lottery.pruning.at_init import prune_at_init

    alive = count_alive(inputs.mask, inputs.prunable)
    keep = alive - prune_count(s.fraction, alive)
    params, batch_stats = inputs.start()
    batches = inputs.batches(s.score_examples) if STRATEGIES[s.method].needs_batches else []
    return prune_at_init(
        s.method,
        inputs.network,
        params,
        batch_stats,
        full_mask(params),
        inputs.prunable,
        batches,
        inputs.key,
        keep,
        synflow_rounds=s.synflow_rounds,
        grasp_temperature=s.grasp_temperature,
        score_mode=s.score_mode,
    )


# -- how many levels prune anything -------------------------------------------------------

def levels_that_prune(groups: WeightGroups, up_to: int) -> tuple[int, int]:
    """How many levels, from the dense network, remove at least one weight (at most
    ``up_to``), and the weights left after them. Each level removes exactly
    ``round(rate * n)`` of a group's ``n`` alive weights (:func:`prune_count`), so once
    every group's count rounds to 0, every later level would repeat the last one."""
    alive = [size for _, size in groups]
    for level in range(up_to):
        removed = [prune_count(rate, n) for (rate, _), n in zip(groups, alive, strict=True)]
        if not any(removed):
            return level, sum(alive)
        alive = [n - r for n, r in zip(alive, removed, strict=True)]
    return up_to, sum(alive)


# -- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A pruning method: its settings from the config, and its ``prune`` function."""

    name: str
    keys: frozenset[str]  # the ``pruning`` keys it reads besides COMMON_KEYS
    # (pruning config, timeline or None before the data is known) -> checked settings
    settings: Callable[[PruningConfig, Timeline | None], Any]
    prune: Callable[[PruneInputs, Any], Mask]
    # Checks the settings against the network's layers (one ConfigError line), cheaply.
    check: Callable[[Any, list[str], Any], None]
    # Prunes inside the training (the level's mask changes as it trains): then
    # ``training_updates(settings, prunable, start, end)`` gives the steps in [start, end) at
    # which the mask changes and ``update(step, params, mask) -> mask``.
    during_training: bool = False
    training_updates: Callable[[Any, list[str], int, int], Any] | None = None
    # Removes whole neurons / channels, so every level's network can be compacted (rebuilt
    # narrower) for its summary, its deployment figures and its export.
    compactable: bool = False
    # Ranks the dense network's (level 0's) trained weights at every level, not level L-1's:
    # the branches that re-prune look at those.
    ranks_dense_weights: bool = False
    # Chooses its masks from the weights at the rewind point (at initialisation), not from
    # trained ones: the branches that compare against trained weights do not apply.
    scores_initial_weights: bool = False
    # Reads training batches (``PruneInputs.batches``) while it scores.
    needs_batches: bool = False
    # (params, prunable paths, settings) -> the weight groups whose counts each level
    # prunes exactly (for :func:`levels_that_prune`); None where levels do not count weights
    # that way (structured counts units, gradual prunes inside one level).
    weight_groups: Callable[[Any, list[str], Any], WeightGroups] | None = None


_MAGNITUDE_KEYS = frozenset(
    {"fraction", "scope", "layer_fractions", "criterion", "start_from", "score_examples",
     "score_mode"}
)
STRATEGIES: dict[str, Strategy] = {
    "magnitude": Strategy(
        "magnitude", _MAGNITUDE_KEYS, _magnitude_settings, _magnitude, _check_magnitude,
        weight_groups=_magnitude_groups,
    ),
    "oneshot": Strategy(
        "oneshot", _MAGNITUDE_KEYS, _oneshot_settings, _oneshot, _check_magnitude,
        weight_groups=_magnitude_groups, ranks_dense_weights=True,
    ),
    "structured": Strategy(
        "structured",
        frozenset(
            {"fraction", "scope", "criterion", "start_from", "score_examples",
             "taylor_flops_weight", "score_mode"}
        ),
        _structured_settings,
        _structured,
        _check_structured,
        compactable=True,
        needs_batches=True,
    ),
    "gradual": Strategy(
        "gradual",
        frozenset(
            {"initial_sparsity", "final_sparsity", "begin_step", "end_step", "frequency", "power"}
        ),
        _gradual_settings,
        _gradual,
        _check_nothing,
        during_training=True,
        training_updates=_gradual_updates,
    ),
    **{
        name: Strategy(
            name, frozenset({"fraction"}) | keys, _at_init_settings, _at_init, _check_nothing,
            weight_groups=_at_init_groups, scores_initial_weights=True,
            needs_batches=name in ("snip", "grasp"),
        )
        for name, keys in AT_INIT.items()
    },
}


def strategy_for(cfg: PruningConfig, timeline: Timeline | None = None) -> tuple[Strategy, Any]:
    """The strategy ``cfg.method`` names and its checked settings, or one ConfigError line.

    Without ``timeline`` (before the data is loaded), step strings are not yet converted.
    """
    strategy = STRATEGIES.get(cfg.method)
    if strategy is None:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"unknown pruning.method {cfg.method!r}; choose one of {known}")
    defaults = PruningConfig()
    for item in dataclasses.fields(cfg):
        key = item.name
        if key in COMMON_KEYS or key in strategy.keys:
            continue
        if getattr(cfg, key) != getattr(defaults, key):
            raise ConfigError(
                f"pruning.{key}={getattr(cfg, key)!r} does not apply to pruning.method="
                f"{cfg.method!r}; remove it"
            )
    return strategy, strategy.settings(cfg, timeline)
