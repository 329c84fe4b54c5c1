"""Post-training int8 quantization of a (pruned) network with Qwix.

Qwix (Google's JAX quantization library) rewrites the Flax module so that its Dense and
Conv products take int8 weights, quantized per output channel with a symmetric absmax scale
(``int8``), and optionally int8 activations quantized on the fly (``int8_dynamic``, Qwix's
dynamic-range quantization). Symmetric quantization maps 0.0 to 0 exactly, so a pruned
weight stays zero: :func:`zeros_kept` checks it on the quantized weights themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix

from lottery.config import ConfigError
from lottery.models.network import BatchStats, Network, Params
from lottery.pruning.mask import Mask, flatten, unflatten

SCHEMES = ("none", "int8", "int8_dynamic")


@dataclass
class Quantized:
    """A quantized network: its forward pass and its int8 weights (with their scales)."""

    forward: Callable[[Any], Any]  # jitted: x -> logits, eval mode
    int8: dict[str, np.ndarray]  # kernel path -> int8 values
    scales: dict[str, np.ndarray]  # kernel path -> float32 scale per output channel
    float_params: dict[str, np.ndarray]  # the leaves left in float (biases, BatchNorm)


def check_quantizable(params: Params, scheme: str) -> None:
    """One line, before anything trains, where Qwix cannot quantize the network so: int8
    weights with float activations on a convolution (Qwix's ``conv_general_dilated`` needs
    both int8, or neither)."""
    if scheme != "int8":
        return
    convolutions = [path for path, leaf in flatten(params).items()
                    if path.endswith("kernel") and np.ndim(leaf) > 2]
    if convolutions:
        raise ConfigError(
            f"deploy.quantize=int8 keeps activations in float, which Qwix cannot do for a "
            f"convolution ({convolutions[0]}); choose deploy.quantize=int8_dynamic (int8 "
            "activations too)"
        )


def quantize(
    network: Network, params: Params, batch_stats: BatchStats, scheme: str = "int8"
) -> Quantized:
    """``params`` quantized by Qwix (``scheme``: int8 weights, or int8 weights and dynamic
    int8 activations)."""
    rule = qwix.QuantizationRule(
        module_path=".*",
        weight_qtype="int8",
        act_qtype="int8" if scheme == "int8_dynamic" else None,
    )
    # Flax's layers, whose convolutions Qwix intercepts (the CPU kernels' are other operations).
    model = qwix.quantize_model(network.with_kernels("xla").module, qwix.PtqProvider([rule]))
    example = jnp.zeros((1, *network.input_shape), jnp.float32)
    # ``train`` bound outside eval_shape, which would trace it (BatchNorm branches on it).
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), example)
    qparams = qwix.quantize_params(jax.tree.map(jnp.asarray, params), shapes["params"])
    variables = {"params": qparams, **({"batch_stats": batch_stats} if batch_stats else {})}

    @jax.jit
    def forward(x: Any) -> Any:
        return model.apply(variables, x, train=False)

    int8, scales, floats = {}, {}, {}
    for path, leaf in flatten(_plain(qparams)).items():
        if path.endswith("/qvalue"):
            int8[path.removesuffix("/qvalue")] = np.asarray(leaf)
        elif path.endswith("/scale"):
            scales[path.removesuffix("/scale")] = np.asarray(leaf, np.float32)
        else:
            floats[path] = np.asarray(leaf)
    return Quantized(forward, int8, scales, floats)


def _plain(qparams: Any) -> Any:
    """Qwix's quantized params as nested dicts: a quantized kernel becomes
    ``{"qvalue": int8, "scale": float32}`` under the kernel's own path."""
    if isinstance(qparams, dict):
        return {key: _plain(value) for key, value in qparams.items()}
    array = getattr(qparams, "array", None)  # WithAux(array=QArray(qvalue, scale, ...))
    if array is not None and hasattr(array, "qvalue"):
        return {"qvalue": array.qvalue, "scale": array.scale}
    return qparams


def zeros_kept(quantized: Quantized, mask: Mask) -> bool:
    """Whether every pruned kernel entry is exactly 0 in the int8 weights."""
    flat_mask = flatten(mask)
    return all(
        not np.any(values[~np.asarray(flat_mask[path], bool)])
        for path, values in quantized.int8.items()
        if path in flat_mask
    )


def int8_tree(quantized: Quantized, mask: Mask) -> tuple[Any, Any]:
    """The int8 weights as one params-like tree (kernels int8, ``<kernel>_scale`` beside
    them, the rest float) and its mask, for :func:`lottery.deploy.sparse_format.save_sparse`."""
    flat_mask = flatten(mask)
    leaves: dict[str, np.ndarray] = dict(quantized.float_params)
    alive: dict[str, np.ndarray] = {p: np.ones(np.shape(v), bool) for p, v in leaves.items()}
    for path, values in quantized.int8.items():
        leaves[path] = values
        alive[path] = np.asarray(flat_mask.get(path, np.ones(values.shape, bool)), bool)
        leaves[f"{path}_scale"] = quantized.scales[path]
        alive[f"{path}_scale"] = np.ones(quantized.scales[path].shape, bool)
    return unflatten(leaves), unflatten(alive)
