"""A finished level's (or branch's) ``summary.json``."""

from __future__ import annotations

from typing import Any

from lottery.experiment.plan import Plan
from lottery.kernels import probes
from lottery.pruning import sparsity_report
from lottery.pruning.cost import cost_report
from lottery.store import MAIN_BRANCH

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def environment() -> dict[str, Any]:
    """The versions and the device that produced a level: bits depend on both."""
    import importlib.metadata
    import os
    import platform

    import jax

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    device = jax.devices()[0]
    return {
        "versions": versions,
        "python": platform.python_version(),
        "device": f"{device.platform}:{device.device_kind}",
        "device_count": jax.device_count(),
        # XLA's flags choose kernels (lottery.kernels.xla_cpu), which change float rounding.
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # Speed only (lottery.kernels.huge_pages): malloc's huge pages, bit-identical results.
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        # The CPU speed-ups this installation was found to run (lottery.kernels.probes): False says
        # the run went without one (an XLA that lacks it), None that it was not asked.
        "cpu_speedups": {
            name: probes.verdicts().get(name)
            for name in ("eigen_convolutions_flag", "onednn_convolution")
        },
    }


def summarize(
    plan: Plan,
    level: int,
    start: int,
    mask: Any,
    history: list[dict[str, float]],
    *,
    digest: str,
    branch: str = MAIN_BRANCH,
) -> dict[str, Any]:
    """The summary of a training from ``start`` under ``mask`` (timings added by the caller).

    Records what :func:`lottery.load` needs to rebuild the network without the dataset (the
    input shape and number of classes) and where the data order came from.
    """
    final = history[-1]
    best = max(history, key=lambda r: r["test/accuracy"])
    summary: dict[str, Any] = {
        "experiment": plan.cfg.name,
        "hash": digest,
        "dense_hash": plan.dense_digest,
        "replicate": plan.cfg.seed,
        "data_seed": plan.data_seed,
        "data_stream": plan.data_stream(level),
        "level": level,
        "branch": branch,
        "input_shape": list(plan.dataset.input_shape),
        "num_classes": plan.dataset.num_classes,
        "start_iteration": start,
        "train_iterations": plan.total_steps - start,
        "test_accuracy": final["test/accuracy"],
        "test_loss": final["test/loss"],
        # The best test accuracy over training is an oracle (test data choosing a stopping
        # point); kept under a name that says so, and shown nowhere else.
        "oracle_best_test_accuracy": best["test/accuracy"],
        "oracle_best_test_iteration": best["iteration"],
        "early_stop_iteration": None,
        "early_stop_val_loss": None,
        "early_stop_test_accuracy": None,
        **sparsity_report(mask, plan.prunable),
    }
    # Nonzero parameters, compression ratio, FLOPs and theoretical speed-up (ShrinkBench's).
    summary.update(cost_report(plan.network, plan.init_params, mask))
    # Layers pruned to nothing: the network's output no longer depends on its input through
    # them (layer collapse, Tanaka et al. 2020).
    summary["collapsed_layers"] = [
        path for path, layer in summary["layers"].items() if layer["remaining"] == 0
    ]
    if "val/accuracy" in final:  # what an accuracy budget judges by
        summary["val_accuracy"] = final["val/accuracy"]
    # How early_stop_* were chosen, or why they are empty.
    off = plan.early_stopping_off or ("no validation data" if "val/loss" not in final else None)
    summary["early_stop"] = f"off: {off}" if off else "minimum validation loss"
    if "val/loss" in final:
        early = min(history, key=lambda r: r["val/loss"])  # first minimum on ties
        summary["early_stop_iteration"] = early["iteration"]
        summary["early_stop_val_loss"] = early["val/loss"]
        summary["early_stop_test_accuracy"] = early["test/accuracy"]
    return summary
