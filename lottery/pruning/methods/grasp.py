"""``pruning.method=grasp`` (Wang et al. 2020): ``w * Hg`` at initialisation, the logits
divided by ``pruning.grasp_temperature``."""

from lottery.pruning.methods.at_init import at_init_strategy

STRATEGY = at_init_strategy(
    "grasp", frozenset({"score_examples", "grasp_temperature", "score_mode"}), needs_batches=True,
    revision="grasp-2",  # the reference's temperature in both passes (issue 29)
)
