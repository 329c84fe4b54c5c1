"""``pruning.method=random``: a uniformly random subset of IMP's count of weights."""

from lottery.pruning.methods.at_init import at_init_strategy

STRATEGY = at_init_strategy("random", frozenset())
