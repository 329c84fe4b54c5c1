"""Reading results and drawing them. Never trains."""

from lottery.analysis.plots import plot_sparsity_accuracy

__all__ = ["plot_sparsity_accuracy"]
