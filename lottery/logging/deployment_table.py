"""The deployment table: accuracy, nonzeros, FLOPs, sizes and latency of each level.

Rows are the ``deployment.json`` records of :mod:`lottery.experiment.deployment`; printed
after a run with ``deploy.measure=true`` and by ``python -m lottery.report``.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def deployment_table(rows: list[dict[str, Any]], title: str) -> Table:
    """Accuracy, nonzeros, FLOPs, sizes and latency of each level. "fast" is what could run
    faster than dense: the compacted network of a structured level, BCOO sparse products
    of an unstructured one."""
    table = Table(title=title)
    columns = ("level", "weights\n%", "val\nacc %", "test\nacc %", "int8\nacc %", "nonzero",
               "FLOPs", "float\nKB", "sparse\nKB", "int8\nKB", "dense\nms b1/b256",
               "fast\nms b1/b256")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        fast = row["latency"].get("compacted") or row["latency"].get("sparse_bcoo")
        int8 = row.get("int8") or {}
        table.add_row(
            str(row["level"]),
            f"{row['weights_remaining_pct']:.2f}",
            _pct(row.get("val_accuracy")),
            _pct(row["test_accuracy"]),
            _pct(int8.get("test_accuracy")),
            f"{row['nonzero_params']:,}" if row.get("nonzero_params") is not None else "-",
            _count(row.get("flops")),
            _kb(row["bytes"]["dense_float"]),
            _kb(row["bytes"].get("sparse")),
            _kb(row["bytes"].get("sparse_int8")),
            _ms(row["latency"]["dense"]),
            _ms(fast) if fast else "-",
        )
    return table


def onnx_latency_table(rows: list[dict[str, Any]], title: str) -> Table | None:
    """onnxruntime's latency of each level's ONNX file, on every core and on one: the dense
    network, the level's as shipped (compacted, or masked: onnxruntime multiplies the zeros)
    and its int8 QDQ file; None where no row has these figures."""
    measured = [row for row in rows if row.get("onnxruntime_latency")]
    if not measured:
        return None
    table = Table(title=title)
    columns = ("level", "weights\n%", "dense\nms b1/b256", "dense 1 thread\nms b1/b256",
               "level\nms b1/b256", "level 1 thread\nms b1/b256", "int8\nms b1/b256",
               "int8 1 thread\nms b1/b256")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for row in measured:
        onnx = row["onnxruntime_latency"]
        shipped = onnx.get("compacted") or onnx.get("masked")
        cells = []
        for latency in (onnx["dense"], shipped, onnx.get("int8")):
            cells += [_ms(latency), _ms(latency, "_1_thread")] if latency else ["-", "-"]
        table.add_row(str(row["level"]), f"{row['weights_remaining_pct']:.2f}", *cells)
    return table


def _count(value: int | None) -> str:
    """1,234 as 1.2k, 40,800,000 as 40.8M."""
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:,.1f}"


def _ms(latency: dict[str, float], suffix: str = "") -> str:
    return f"{latency[f'batch_1_ms{suffix}']:.3f}/{latency[f'batch_256_ms{suffix}']:.2f}"


