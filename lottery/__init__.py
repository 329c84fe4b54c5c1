"""lottery: Lottery Ticket Hypothesis and pruning experiments in JAX, Flax and optax."""

__version__ = "0.1.0"
