"""Reading results and drawing them. Never trains.

The DataFrame loaders (:mod:`lottery.analysis.results`) import pandas only when first used,
so the training command, which draws one plot, does not pay for pandas.
"""

from typing import Any

from lottery.analysis.plots import (
    plot_accuracy_vs_weights,
    plot_deployment,
    plot_early_stopping,
    plot_sparsity_accuracy,
    plot_training_curves,
    save_figure,
)

_RESULTS = (
    "RESULT_COLUMNS",
    "aggregate",
    "load_deployment",
    "load_metrics",
    "load_results",
    "load_wandb",
)


def __getattr__(name: str) -> Any:
    if name in _RESULTS:
        from lottery.analysis import results

        return getattr(results, name)
    raise AttributeError(f"module 'lottery.analysis' has no attribute {name!r}")


__all__ = [
    *_RESULTS,
    "plot_accuracy_vs_weights",
    "plot_deployment",
    "plot_early_stopping",
    "plot_sparsity_accuracy",
    "plot_training_curves",
    "save_figure",
]
