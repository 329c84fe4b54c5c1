"""A finished model as a ``jax.export`` artifact: runs without this package or its config.

The eval-mode forward pass is exported with the weights (and BatchNorm statistics) baked in
as constants and a symbolic batch dimension, serialized to one file. Loading it needs jax,
jaxlib and flatbuffers (``pip install jax flatbuffers``: JAX's deserializer imports
flatbuffers, which jax does not require), not this package, Flax or Qwix:
``jax.export.deserialize(bytearray(open(path, "rb").read())).call(x)`` gives the logits for
a float32 batch ``x`` of the model's input shape, on the platforms it was exported for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from lottery.atomic import atomic_write_bytes
from lottery.models.network import BatchStats, Network, Params

# Where an exported model runs: this machine's CPU and NVIDIA GPUs (lowered for both here,
# no GPU needed to export).
PLATFORMS = ("cpu", "cuda")


def export_model(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    path: str | Path,
    forward: Callable[[Any], Any] | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> int:
    """Write the serialized forward pass of ``network`` to ``path``; its bytes.

    ``forward(x) -> logits`` replaces the plain forward pass (a quantized model's).
    """
    if forward is None:

        def forward(x: Any) -> Any:
            return network.apply(params, batch_stats, x, train=False)[0]

    dims = ", ".join(str(d) for d in network.input_shape)
    shape = jax.export.symbolic_shape(f"batch, {dims}")
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    exported = jax.export.export(jax.jit(forward), platforms=tuple(platforms))(spec)
    data = bytes(exported.serialize())
    atomic_write_bytes(path, data)
    return len(data)


def load_exported(path: str | Path) -> Callable[[Any], Any]:
    """The forward pass an artifact of :func:`export_model` holds: ``call(x) -> logits``."""
    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))
    return exported.call
