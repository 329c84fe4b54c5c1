"""``pruning.method=blocks``: whole residual blocks with an identity shortcut, ranked by the
L1 norm of the block's last BatchNorm scale; every level's network compacts shallower.

Per level, ``round(fraction * alive)`` of the removable blocks still alive go (the lowest
scores; ties to the earlier block): ResNet-20/32/56/110's and the ImageNet ResNets' blocks
without a projection shortcut, MobileNetV2's blocks after each stage's first. A pruned
block's every parameter is masked, so it passes its input through (``relu(0 + x) = x``
behind a ReLU, ``0 + x`` in MobileNetV2's linear bottleneck), and
:func:`lottery.deploy.compact` leaves it out of the module. See
:func:`lottery.pruning.structured.block_prune`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lottery.config import ConfigError, PruningConfig
from lottery.pruning.base import PruneInputs, Strategy, Timeline
from lottery.pruning.mask import Mask

KEYS = frozenset({"fraction"})


@dataclass(frozen=True)
class BlockSettings:
    """Remove ``fraction`` of the remaining removable blocks per level."""

    fraction: float


def settings(cfg: PruningConfig, timeline: Timeline | None) -> BlockSettings:
    if not 0.0 <= cfg.fraction < 1.0:
        raise ConfigError(
            f"pruning.fraction={cfg.fraction} must be in [0, 1) (the share of the remaining "
            "blocks each level removes), e.g. 0.2"
        )
    return BlockSettings(cfg.fraction)


def prune(inputs: PruneInputs, s: BlockSettings) -> Mask:
    from lottery.pruning.structured import block_prune

    return block_prune(inputs.params, inputs.mask, s.fraction)


def check(params: Any, prunable: list[str], s: BlockSettings) -> None:
    from lottery.pruning.structured import removable_blocks

    removable_blocks(params)  # one line if this network has no identity-shortcut block


STRATEGY = Strategy("blocks", KEYS, settings, prune, check, compactable=True)
