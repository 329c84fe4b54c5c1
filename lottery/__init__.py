"""lottery: Lottery Ticket Hypothesis and pruning experiments in JAX, Flax and optax."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lottery.ticket import Ticket

from lottery.xla_cpu import prefer_eigen_convolutions

__version__ = "0.1.0"

# Before JAX starts a backend: XLA reads its flags once (see lottery.xla_cpu).
prefer_eigen_convolutions()


def load(path: str | Path) -> Ticket:
    """A finished level or branch folder as a :class:`lottery.ticket.Ticket`: network,
    params, mask and BatchNorm statistics, without the dataset.

    Imported lazily so that ``import lottery`` stays light (no JAX until it is needed).
    """
    from lottery.ticket import load as load_ticket

    return load_ticket(path)
