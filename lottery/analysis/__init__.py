"""Reading results and drawing them. Never trains."""

from lottery.analysis.plots import (
    plot_accuracy_vs_weights,
    plot_early_stopping,
    plot_sparsity_accuracy,
    plot_training_curves,
    save_figure,
)
from lottery.analysis.results import (
    RESULT_COLUMNS,
    aggregate,
    load_metrics,
    load_results,
    load_wandb,
)

__all__ = [
    "RESULT_COLUMNS",
    "aggregate",
    "load_metrics",
    "load_results",
    "load_wandb",
    "plot_accuracy_vs_weights",
    "plot_early_stopping",
    "plot_sparsity_accuracy",
    "plot_training_curves",
    "save_figure",
]
