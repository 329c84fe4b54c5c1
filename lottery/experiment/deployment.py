"""What each finished level would cost to ship (``deploy.*``): sizes, latency, int8, export.

For every main-line level of a replicate, ``deployment.json`` in the level's folder records:

- sizes on disk: the dense float32 ``.npz``, the same compressed, the sparse format of
  :mod:`lottery.deploy.sparse_format`, and (with ``deploy.quantize``) the sparse format of
  the int8 weights with their scales (``params_sparse_int8.npz``, written beside);
- the median CPU latency at batch 1 and 256 of the dense network, and of what could run
  faster: the compacted network of a structured level, the BCOO sparse products of an
  unstructured one (:mod:`lottery.deploy.sparse_inference`), and the int8 network;
- the int8 network's test accuracy beside the float one, and whether its pruned weights are
  still exactly 0;
- onnxruntime's median latency (batch 1 and 256, on every core and single-threaded) of the
  network as :mod:`lottery.deploy.onnx_export` writes it: the dense network, the level's
  (compacted where the method's levels compact, masked otherwise: onnxruntime multiplies the
  zeros) and its int8 QDQ file. A model with a layer the exporter cannot translate gets no
  onnxruntime figures, and one warning line saying why.

Figures are made once per level, by the first run that asks for them (a finished experiment
can be measured later by running it again with ``deploy.measure=true``). With
``deploy.export=jax_export`` (or ``true``) the chosen level (the accuracy budget's, or the
last) is written as a ``jax.export`` artifact, ``model.jax_export``; with ``onnx`` as ONNX,
``model.onnx``; with ``all`` as both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from lottery.atomic import atomic_write_json, this_process_writes
from lottery.config.validate import export_formats
from lottery.deploy import compact, inference_latency, parameter_count, size_on_disk
from lottery.deploy.compact import scaled_network as _scaled_network
from lottery.deploy.export import export_model
from lottery.deploy.latency import FIGURE_BUDGET_S, LATENCY_BATCHES, forward_latency
from lottery.deploy.onnx_export import UnsupportedLayer, export_onnx, onnx_latency, to_onnx
from lottery.deploy.quantize import check_quantizable as _check_quantizable
from lottery.deploy.quantize import int8_tree, quantize, zeros_kept
from lottery.deploy.sparse_format import dense_size, save_sparse
from lottery.deploy.sparse_inference import sparse_forward
from lottery.experiment.budget import BUDGET_FILE
from lottery.experiment.plan import Plan
from lottery.logging import console
from lottery.logging.deployment_table import deployment_table, onnx_latency_table
from lottery.store import (
    MASK_FILE,
    PARAMS_FILE,
    SPARSE_PARAMS_FILE,
    SUMMARY_FILE,
    ExperimentStore,
    ReplicateStore,
    load_tree_npz,
)
from lottery.train.steps import pad_for_eval

DEPLOYMENT_FILE = "deployment.json"
EXPORT_FILE = "model.jax_export"
ONNX_FILE = "model.onnx"
INT8_FILE = "params_sparse_int8.npz"
# onnxruntime's thread counts measured, by the suffix of their figures: every core, and one.
ONNX_THREADS = {"": None, "_1_thread": 1}


def accuracy_on_test(forward: Any, plan: Plan, batch_size: int = 1000) -> float:
    """Accuracy of ``forward`` on the test split held in memory."""
    split = plan.dataset.test
    x, y, weight = pad_for_eval(split.x, split.y, batch_size)
    correct = 0.0
    for xb, yb, wb in zip(x, y, weight, strict=True):
        predicted = jnp.argmax(forward(jnp.asarray(xb)), axis=-1)
        correct += float(jnp.sum((predicted == jnp.asarray(yb)) * jnp.asarray(wb)))
    return correct / len(split)


def _latencies(forward: Any, input_shape: tuple[int, ...]) -> dict[str, float]:
    return {
        f"batch_{b}_ms": 1e3 * forward_latency(forward, input_shape, b, budget_s=FIGURE_BUDGET_S)
        for b in LATENCY_BATCHES
    }


def _network_latencies(network: Any, params: Any, batch_stats: Any) -> dict[str, float]:
    return {
        f"batch_{b}_ms": 1e3
        * inference_latency(network, params, batch_stats, b, budget_s=FIGURE_BUDGET_S)
        for b in LATENCY_BATCHES
    }


def _onnx_latencies(
    network: Any, params: Any, batch_stats: Any, quantized: Any = None
) -> dict[str, float]:
    """onnxruntime's median milliseconds of the network's ONNX file (``quantized``: its int8
    QDQ file) at each batch size, on every core and single-threaded."""
    model = to_onnx(network, params, batch_stats, quantized=quantized)
    return {
        f"batch_{b}_ms{suffix}": 1e3
        * onnx_latency(model, network.input_shape, b, threads, budget_s=FIGURE_BUDGET_S)
        for b in LATENCY_BATCHES
        for suffix, threads in ONNX_THREADS.items()
    }


def _level_onnx_latencies(
    plan: Plan, shipped: tuple[Any, Any, Any], quantized: Any
) -> dict[str, Any]:
    """The level's onnxruntime figures: its network as shipped (``shipped``: compacted or
    masked) and, with ``deploy.quantize``, the int8 file of it (``quantized``: of
    ``shipped``'s weights, or None to quantize them here)."""
    name = "compacted" if plan.strategy.compactable else "masked"
    figures = {name: _onnx_latencies(*shipped)}
    if plan.cfg.deploy.quantize != "none":
        quantized = quantized or quantize(*shipped, plan.cfg.deploy.quantize)
        figures["int8"] = _onnx_latencies(*shipped, quantized)
    return figures


def _level_weights(folder: Path) -> tuple[Any, Any, Any]:
    """A finished level's trained weights, BatchNorm statistics and mask."""
    weights = load_tree_npz(folder / PARAMS_FILE)
    mask = load_tree_npz(folder / MASK_FILE)["mask"]
    return weights.get("params", {}), weights.get("batch_stats", {}), mask


def level_figures(
    plan: Plan, folder: Path, dense_ms: dict[str, float], dense_onnx_ms: dict[str, float] | None
) -> dict[str, Any]:
    """The deployment figures of one finished level (see the module's docstring);
    ``dense_onnx_ms`` None: the model does not export to ONNX."""
    cfg, network = plan.cfg, plan.network
    params, stats, mask = _level_weights(folder)
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    figures: dict[str, Any] = {
        "level": summary["level"],
        "weights_remaining_pct": summary["weights_remaining_pct"],
        "test_accuracy": summary["test_accuracy"],
        "val_accuracy": summary.get("val_accuracy"),
        "nonzero_params": summary.get("nonzero_params"),
        "flops": summary.get("flops"),
        "bytes": {
            "dense_float": dense_size(params),
            "dense_compressed": dense_size(params, compressed=True),
            "sparse": (folder / SPARSE_PARAMS_FILE).stat().st_size
            if (folder / SPARSE_PARAMS_FILE).is_file()
            else None,
        },
        "latency": {"dense": dense_ms},
    }
    shipped = (network, params, stats)  # what the level ships: compacted where it compacts
    if plan.strategy.compactable:
        shipped = small, small_params, small_stats = compact(network, params, stats, mask)
        measured = summary.get("compacted")  # the level's summary measured it already
        figures["latency"]["compacted"] = (
            {f"batch_{b}_ms": measured[f"latency_ms_batch_{b}"] for b in LATENCY_BATCHES}
            if measured
            else _network_latencies(small, small_params, small_stats)
        )
        figures["bytes"]["compacted_float"] = dense_size(small_params)
    elif summary["level"] > 0:
        forward = sparse_forward(network, params, stats, mask)
        figures["latency"]["sparse_bcoo"] = _latencies(forward, network.input_shape)
    quantized = None
    if cfg.deploy.quantize != "none":
        quantized = quantize(network, params, stats, cfg.deploy.quantize)
        tree, alive = int8_tree(quantized, mask)
        figures["bytes"]["sparse_int8"] = save_sparse(folder / INT8_FILE, tree, alive)
        figures["int8"] = {
            "scheme": cfg.deploy.quantize,
            "test_accuracy": accuracy_on_test(quantized.forward, plan),
            "pruned_weights_zero": zeros_kept(quantized, mask),
        }
        figures["latency"]["int8"] = _latencies(quantized.forward, network.input_shape)
    if dense_onnx_ms is None:
        figures["onnx_unsupported"] = True
    else:
        # The int8 network above is of the uncompacted weights: reused where they ship.
        reusable = None if plan.strategy.compactable else quantized
        figures["onnxruntime_latency"] = {
            "dense": dense_onnx_ms,
            **_level_onnx_latencies(plan, shipped, reusable),
        }
    return figures


def _stale(file: Path, scheme: str) -> bool:
    """No figures yet, unreadable ones, or figures of another quantization (level 0 is shared
    by experiments that differ in ``deploy.quantize``)."""
    try:
        figures = json.loads(file.read_text())
    except (OSError, ValueError):
        return True
    if "onnxruntime_latency" not in figures and "onnx_unsupported" not in figures:
        return True  # made before onnxruntime was measured
    return (figures.get("int8") or {}).get("scheme", "none") != scheme


def _dense_onnx_latencies(plan: Plan) -> dict[str, float] | None:
    """onnxruntime figures of the unpruned network; None, after one warning line, where the
    model has a layer the ONNX exporter cannot translate (a model of one's own)."""
    try:
        return _onnx_latencies(plan.network, plan.init_params, plan.init_batch_stats)
    except UnsupportedLayer as error:
        print(f"warning: no onnxruntime latency: {error}", file=sys.stderr, flush=True)
        return None


def measure_replicate(plan: Plan, replicate: ReplicateStore, levels: list[int]) -> list[dict]:
    """Deployment figures of the given finished levels, made where missing; all of them."""
    rows, dense_ms, dense_onnx_ms = [], None, None
    for level in levels:
        folder = replicate.level_path(level)
        file = folder / DEPLOYMENT_FILE
        if _stale(file, plan.cfg.deploy.quantize):
            if dense_ms is None:  # the unpruned network, measured once per run
                dense_ms = _network_latencies(plan.network, plan.init_params, plan.init_batch_stats)
                dense_onnx_ms = _dense_onnx_latencies(plan)
            atomic_write_json(file, level_figures(plan, folder, dense_ms, dense_onnx_ms))
        rows.append(json.loads(file.read_text()))
    return rows


def export_level(
    plan: Plan, folder: Path, formats: tuple[str, ...] = ("jax_export",)
) -> list[Path]:
    """Write ``folder``'s network (compacted where structured, quantized where asked) in each
    of ``formats`` in the folder: a ``jax.export`` artifact, and ONNX; their paths."""
    network = plan.network
    params, stats, mask = _level_weights(folder)
    if plan.strategy.compactable:
        network, params, stats = compact(network, params, stats, mask)
    scheme = plan.cfg.deploy.quantize
    quantized = quantize(network, params, stats, scheme) if scheme != "none" else None
    paths = []
    if "jax_export" in formats:
        path = folder / EXPORT_FILE
        export_model(network, params, stats, path, quantized and quantized.forward)
        paths.append(path)
    if "onnx" in formats:
        path = folder / ONNX_FILE
        export_onnx(network, params, stats, path, quantized=quantized)
        paths.append(path)
    return paths


def deploy_replicate(
    plan: Plan, store: ExperimentStore, replicate: ReplicateStore, last: int
) -> None:
    """With ``deploy.*``: each finished level's deployment figures and the table, and the
    chosen level (the accuracy budget's, or the last finished) exported."""
    deploy = plan.cfg.deploy
    formats = export_formats(deploy)
    if not (deploy.measure or formats) or not this_process_writes():
        return
    levels = [level for level in range(last + 1) if replicate.is_done(level)]
    if not levels:
        return
    if deploy.measure:
        rows = measure_replicate(plan, replicate, levels)
        print_deployment(rows, f"{plan.prefix}deployment of {plan.cfg.name} [{store.path.name}]")
    if formats:
        budget = replicate.path / BUDGET_FILE
        judged = budget.is_file() and plan.cfg.pruning.max_accuracy_drop is not None
        chosen = json.loads(budget.read_text())["chosen_level"] if judged else None
        level = chosen if chosen in levels else levels[-1]
        for path in export_level(plan, replicate.level_path(level), formats):
            console.print(f"{plan.prefix}exported level {level}: {path}")


class CompactedFigures:
    """A structured ticket compacted into a smaller network: parameters, bytes and median
    CPU latency at batch 1 and 256, beside the dense network's (measured once)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._dense: dict[str, Any] | None = None

    def __call__(self, params: Any, batch_stats: Any, mask: Any) -> dict[str, Any]:
        plan = self.plan
        if self._dense is None:
            self._dense = _size_and_latency(plan.network, plan.init_params, plan.init_batch_stats)
        small = _size_and_latency(*compact(plan.network, params, batch_stats, mask))
        speedups = {
            f"speedup_batch_{b}": self._dense[f"latency_ms_batch_{b}"]
            / small[f"latency_ms_batch_{b}"]
            for b in LATENCY_BATCHES
        }
        return {**small, "dense": self._dense, **speedups}


def _size_and_latency(network: Any, params: Any, batch_stats: Any) -> dict[str, Any]:
    return {
        "params": parameter_count(params),
        "bytes": size_on_disk(params),
        **{
            f"latency_ms_batch_{b}": 1e3
            * inference_latency(network, params, batch_stats, b, budget_s=FIGURE_BUDGET_S)
            for b in LATENCY_BATCHES
        },
    }


def save_ticket_files(folder: Path, params: Any, mask: Any) -> dict[str, int]:
    """Save the ticket's weights in the sparse format beside its dense weights; the bytes
    on disk of both, and of the dense weights as a plain npz, for the summary."""
    return {
        "dense_npz_bytes": dense_size(params),
        "params_npz_bytes": (folder / PARAMS_FILE).stat().st_size,
        "sparse_bytes": save_sparse(folder / SPARSE_PARAMS_FILE, params, mask),
    }


def scaled_network(network: Any, factor: float) -> Any:
    """The same family with every hidden width times ``factor`` (for the small-dense
    branch; see :func:`lottery.deploy.compact.scaled_network`)."""
    return _scaled_network(network, factor)


def check_quantizable(params: Any, scheme: str) -> None:
    """One line, before training, where ``deploy.quantize=scheme`` cannot quantize these
    weights (see :func:`lottery.deploy.quantize.check_quantizable`)."""
    _check_quantizable(params, scheme)


def print_deployment(rows: list[dict[str, Any]], title: str) -> None:
    """The deployment table and, where measured, onnxruntime's latency table."""
    console.print(deployment_table(rows, title))
    onnx = onnx_latency_table(rows, f"onnxruntime latency ({title})")
    if onnx is not None:
        console.print(onnx)
