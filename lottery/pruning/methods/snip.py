"""``pruning.method=snip`` (Lee et al. 2019): ``|g * w|`` at initialisation, the gradients
taken on ``pruning.score_examples`` training examples."""

from lottery.pruning.methods.at_init import at_init_strategy

STRATEGY = at_init_strategy("snip", frozenset({"score_examples", "score_mode"}), needs_batches=True)
