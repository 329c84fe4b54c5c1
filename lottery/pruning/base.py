"""What every pruning method is made of: :class:`Strategy` (one registry entry), the inputs a
method may look at (:class:`PruneInputs`), the run's :class:`Timeline`, and the checks that
several methods share. A method's own module (``lottery/pruning/methods/<name>.py``, or one
of your own, see "Your own pruning method" in docs/guides/extending.md) imports from here
only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lottery.config import ConfigError, PruningConfig, to_iterations
from lottery.pruning.magnitude import prune_count
from lottery.pruning.mask import Mask

# Keys of ``pruning`` every strategy reads (what to prune, how often, where to rewind).
COMMON_KEYS = frozenset({"method", "levels", "rewind_step", "prunable", "max_accuracy_drop"})
SCOPES = ("global", "layerwise")
NORMS = ("l1", "l2")
SCORE_MODES = ("eval", "train")  # how the network runs while scored (pruning.score_mode)

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


@dataclass
class TrainingInputs:
    """What a mask update inside a training may look at (``Strategy.training_updates``)."""

    step: int  # the steps trained so far: the update comes before step ``step``'s batch
    params: Any  # the weights now (numpy, pruned ones 0.0)
    mask: Mask  # the mask now
    # () -> the dense gradient of the training loss at ``params`` on the batch step ``step``
    # trains on (augmented as it will be), for every weight, pruned ones too (RigL's
    # regrowth score); computed only when called.
    gradients: Callable[[], Any] = field(default=lambda: None)


@dataclass(frozen=True)
class Timeline:
    """What step strings mean in this run (known once the data is loaded)."""

    steps_per_epoch: int
    total_steps: int

    def iterations(self, value: str, key: str) -> int:
        return to_iterations(value, self.steps_per_epoch, key)


def check_nothing(params: Any, prunable: list[str], settings: Any) -> None:
    """A ``Strategy.check`` for methods that work on any network's prunable leaves."""
    return None


@dataclass(frozen=True)
class Strategy:
    """A pruning method: its settings from the config, its ``prune`` function, and what the
    driver, the deployment figures and the branches need to know about it."""

    name: str
    keys: frozenset[str]  # the ``pruning`` keys it reads besides COMMON_KEYS
    # (pruning config, timeline or None before the data is known) -> checked settings
    settings: Callable[[PruningConfig, Timeline | None], Any]
    prune: Callable[[PruneInputs, Any], Mask]
    # Checks the settings against the network's layers (one ConfigError line), cheaply.
    check: Callable[[Any, list[str], Any], None] = check_nothing
    # Prunes inside the training (the level's mask changes as it trains): then
    # ``training_updates(settings, prunable, start, end)`` gives the steps in [start, end) at
    # which the mask changes and ``update(TrainingInputs) -> mask``.
    during_training: bool = False
    training_updates: Callable[[Any, list[str], int, int], Any] | None = None
    # (params, prunable paths, settings) -> the weight groups whose counts each level
    # prunes exactly (for :func:`levels_that_prune`, and to check each level's mask has
    # that count); None where levels do not count weights that way (structured counts
    # units, gradual prunes inside one level).
    weight_groups: Callable[[Any, list[str], Any], WeightGroups] | None = None
    # Removes whole neurons / channels, so every level's network can be compacted (rebuilt
    # narrower) for its summary, its deployment figures and its export.
    compactable: bool = False
    # Ranks the dense network's (level 0's) trained weights at every level, not level L-1's:
    # the branches that re-prune look at those.
    ranks_dense_weights: bool = False
    # Chooses its masks from the weights at the rewind point (at initialisation), not from
    # trained ones: the branches that compare against trained weights do not apply.
    scores_initial_weights: bool = False
    # May read training batches (``PruneInputs.batches``) while it scores.
    needs_batches: bool = False
    # (pruning config) -> the revision of its computation, for a method corrected after
    # stores held its results: it enters the experiment hash (``pruning.revision``), so
    # those stores are never read as the corrected method's. None: never corrected.
    revision: Callable[[Any], str | None] | None = None
    # Settings of its own that ``pruning`` has no key for (a method of one's own): set as
    # ``pruning.own.<key>``, read by ``settings`` from ``cfg.own``; any other key there is one
    # ConfigError line.
    own_keys: frozenset[str] = frozenset()


# -- checks several methods share ---------------------------------------------------------


def check_scope(cfg: PruningConfig) -> None:
    if cfg.scope not in SCOPES:
        raise ConfigError(f"unknown pruning.scope {cfg.scope!r}; choose one of {', '.join(SCOPES)}")


def criterion_of(cfg: PruningConfig, choices: tuple[str, ...]) -> str:
    """``pruning.criterion``, or the method's default (the first choice) when unset."""
    criterion = cfg.criterion or choices[0]
    if criterion not in choices:
        raise ConfigError(
            f"unknown pruning.criterion {criterion!r} for pruning.method={cfg.method!r}; "
            f"choose one of {', '.join(choices)}"
        )
    return criterion


def check_taylor_only(cfg: PruningConfig, criterion: str, key: str) -> None:
    """One ConfigError line if ``pruning.<key>``, which only the Taylor criterion reads, is
    set (not its default) under another criterion, where it would silently change nothing."""
    value = getattr(cfg, key)
    if criterion != "taylor" and value != getattr(PruningConfig(), key):
        raise ConfigError(
            f"pruning.{key}={value} applies to pruning.criterion=taylor, not {criterion}; "
            "remove it or choose taylor"
        )


def check_score_examples(cfg: PruningConfig) -> None:
    if cfg.score_examples < 1:
        raise ConfigError(f"pruning.score_examples={cfg.score_examples} must be at least 1")


def score_mode_of(cfg: PruningConfig, own: str = "eval") -> str:
    """``pruning.score_mode``, or the method's ``own`` when unset, checked."""
    mode = cfg.score_mode or own
    if mode not in SCORE_MODES:
        raise ConfigError(
            f"unknown pruning.score_mode {cfg.score_mode!r}; choose one of {', '.join(SCORE_MODES)}"
        )
    return mode


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


def check_one_training(cfg: PruningConfig, what: str) -> None:
    """One line unless ``pruning.levels=1``, for a method whose mask changes inside one
    training (``what`` says how, for the message)."""
    if cfg.levels != 1:
        raise ConfigError(
            f"pruning.levels={cfg.levels} does not apply to pruning.method={cfg.method}, which "
            f"{what} inside one training; set pruning.levels=1"
        )


def update_frequency(cfg: PruningConfig, timeline: Timeline) -> int:
    """``pruning.frequency`` in iterations, at least one (else one line)."""
    frequency = timeline.iterations(cfg.frequency, "pruning.frequency")
    if frequency < 1:
        raise ConfigError(f"pruning.frequency={cfg.frequency!r} must be at least one iteration")
    return frequency
