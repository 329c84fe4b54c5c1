"""What a branch is: extra trainings from a finished level's mask, each a small function.

A branch function gets the level's :class:`BranchInputs` and its own typed arguments (a
dataclass of ``lottery.config.schema``) and asks for one or more trainings, each a
:class:`BranchRun`. The driver trains each into ``level_<L>/branch_<label>_<hash>/`` (the
hash covers the experiment and the run's arguments), resumable like a level, skipped when
finished. Branches never change the main line: they are not in the experiment's hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lottery.pruning import Mask


@dataclass
class BranchRun:
    """One training of a branch: where it starts, and how it differs from the level's."""

    label: str  # the series name in tables and plots (``random_reinit``, ``rewind_to_100it``)
    args: dict[str, Any]  # what makes this run differ: hashed into its folder name
    start_step: int
    # () -> (weights, BatchNorm statistics, mask) to start from; called only when the run is
    # not finished yet (it may be costly: a new rewind point trains level 0 again).
    start: Callable[[], tuple[Any, Any, Mask]]
    optimizer: Any = None  # an OptimizerConfig replacing the experiment's, or None
    stream: int | None = None  # the data stream (order, augmentation); None: the level's
    # (trained weights, batch stats) -> extra summary entries, computed before it is finished
    finalize: Callable[[Any, Any], dict[str, Any]] | None = None
    network: Any = None  # a lottery.models.Network replacing the experiment's, or None


@dataclass
class BranchInputs:
    """What a branch may use from its level (the costly ones are functions)."""

    plan: Any  # lottery.experiment.Plan
    level: int
    mask: Mask  # the level's mask
    seeds: tuple[int, int]  # (replicate seed, level): the root of a branch's random choices
    parent: Callable[[], tuple[Any, Any]]  # level L-1's trained weights and statistics
    trained: Callable[[], tuple[Any, Any]]  # this level's trained weights and statistics
    rewind_point: Callable[[int], tuple[Any, Any]]  # θ_k and its statistics, for any k
    # (weights, statistics) -> test metrics ({"test/accuracy": ..., "test/loss": ...})
    evaluate: Callable[[Any, Any], dict[str, float]]
    final_lr: float = 0.0  # the learning rate of the schedule's last step
    # (network, factor) -> the same family with every hidden width times factor (the
    # experiment gives lottery.deploy.compact.scaled_network; None where it gives none)
    narrower: Callable[[Any, float], Any] | None = None


@dataclass(frozen=True)
class Branch:
    """A branch by name: its runs for a level, a check of its arguments, and what it needs of
    the pruning method (the checks read these, never a branch's name)."""

    name: str
    runs: Callable[[BranchInputs, Any], list[BranchRun]]
    # (arguments, timeline) -> None, or one ConfigError line (before anything is written)
    check: Callable[[Any, Any], None] = field(default=lambda args, timeline: None)
    # (arguments, config, the network's BatchNorm statistics) -> None, or one ConfigError
    # line, once the network is built (before anything is trained)
    check_network: Callable[[Any, Any, Any], None] = field(
        default=lambda args, cfg, batch_stats: None
    )
    # A branch of your own: the dataclass of its arguments (a default for every field), set
    # as ``branch.own.<name>.<key>``; None: it takes none. The built-in branches' arguments
    # are ``branch.<name>`` of the schema instead.
    arguments: type | None = None
    # It compares trainings of one mask held fixed (instability's two copies): not for a
    # method whose mask changes during training (``Strategy.during_training``).
    needs_fixed_mask: bool = False
    # It starts from the level's trained weights (lr_rewind, finetune): not for a method whose
    # masks are chosen at initialisation (``Strategy.scores_initial_weights``).
    from_trained_weights: bool = False
