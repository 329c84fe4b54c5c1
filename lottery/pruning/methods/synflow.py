"""``pruning.method=synflow`` (Tanaka et al. 2020): data-free, iterative over
``pruning.synflow_rounds`` rounds."""

from lottery.pruning.methods.at_init import at_init_strategy

STRATEGY = at_init_strategy(
    "synflow", frozenset({"synflow_rounds", "score_mode"}),
    revision="synflow-2",  # |.| of the BatchNorm statistics too, as the reference (issue 29)
)
