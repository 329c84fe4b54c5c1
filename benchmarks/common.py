"""Shared by the benchmark scripts: machine description, medians, table and JSON output.

Benchmarks are never imported by the package. Each script prints a table and, with
``--json PATH``, writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # conftest.make_config composes configs like the CLI

import lottery  # noqa: E402

# The benchmarks measure what the command line runs: its CPU settings (lottery.kernels.xla_cpu),
# which importing lottery does not set, before any JAX computation.
lottery.use_cpu_settings()


def machine() -> dict[str, Any]:
    """CPU model, cores, JAX device kind and package versions."""
    from lottery.experiment.summary import environment

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # The same record every level's summary.json carries (versions, device).
    return {"cpu": cpu, "cores": os.cpu_count(), **environment()}


def cifar_network(case: str, kernels: str, masked: bool) -> tuple[Any, Any, Any, Any]:
    """The network ``case`` for CIFAR-10-shaped inputs, its initial parameters and
    BatchNorm statistics, and, when ``masked``, a random half of every tensor pruned (the
    mask, and the parameters zeroed under it); else mask None."""
    import jax
    import jax.numpy as jnp

    from lottery.config import ModelConfig
    from lottery.models import build

    network = build(ModelConfig(name=case, kernels=kernels), (32, 32, 3), 10)
    params, stats = network.init(jax.random.key(0))
    if not masked:
        return network, params, stats, None
    mask = jax.tree.map(
        lambda p: jax.random.bernoulli(jax.random.key(p.size), 0.5, p.shape), params
    )
    params = jax.tree.map(lambda p, m: jnp.where(m, p, 0.0), params, mask)
    return network, params, stats, mask


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def parser(description: str) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return args


def report(title: str, columns: list[str], rows: list[dict[str, Any]], extra: dict[str, Any],
           json_path: Path | None) -> None:
    """Print a table of ``rows`` and the machine; write JSON if asked."""
    from rich.console import Console
    from rich.table import Table

    info = machine()
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*[_fmt(row.get(column)) for column in columns])
    console = Console(width=max(160, Console().width))
    console.print(table)
    console.print(f"machine: {info['cpu']}, {info['cores']} cores, {info['device']}; "
                  f"jax {info['versions']['jax']}")
    for key, value in extra.items():
        console.print(f"{key}: {_fmt(value)}")
    if json_path:
        payload = {"title": title, "machine": info, "rows": rows, **extra}
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return "-" if value is None else str(value)
