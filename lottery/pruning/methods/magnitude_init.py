"""``pruning.method=magnitude_init``: ``|w|`` at the rewind point."""

from lottery.pruning.methods.at_init import at_init_strategy

STRATEGY = at_init_strategy("magnitude_init", frozenset())
