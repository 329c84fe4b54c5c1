"""What a pruned network costs, as papers report it (and as ShrinkBench measures it).

Two numbers per ticket, each against its dense network:

- **compression ratio**: all parameters over the alive ones;
- **theoretical speedup**: the dense network's FLOPs over the pruned one's.

FLOPs here are ShrinkBench's: the multiply-adds of the convolutional and dense layers for one
example, each layer counted as (weights of its kernel still alive) x (output positions). A Dense
layer on a flat vector has one output position; a convolution has one per element of its output
feature map (1-D or 2-D). Biases, BatchNorm, pooling, ReLU and the residual additions are not
counted, as in ShrinkBench.

The output positions depend only on the module and the input shape, not on any value, so they
are found by tracing the module's ``init`` once under :func:`jax.eval_shape` (no compute, no
BatchNorm statistics needed) with :func:`flax.linen.intercept_methods` recording the output
shape of every ``nn.Dense`` and ``nn.Conv`` call. The trace is cached per (module, input
shape): the driver asks once per level and the answer never changes.

For structured pruning, where a dead output channel is masked in its layer's kernel and again
as an input channel of the next layer's kernel, the count reflects exactly the channels that
remain: each kernel contributes only its alive weights. (If only the output channels were
masked, the next layer would still be charged for its weights on the dead inputs.)
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lottery.models.network import Network, Params
from lottery.pruning.mask import Mask, flatten


class LayerCall(NamedTuple):
    """One Dense or Conv layer: its kernel's shape and its output positions per example."""

    kernel_shape: tuple[int, ...]
    positions: int

    @property
    def dense_flops(self) -> int:
        """Multiply-adds per example with every weight alive."""
        return math.prod(self.kernel_shape) * self.positions


def _positions(output_shape: tuple[int, ...]) -> int:
    """Output positions of a call on a batch of one: every axis but the batch and the features."""
    return math.prod(output_shape[1:-1])


def _module_path(module: nn.Module) -> str:
    return "/".join(str(part) for part in module.scope.path)


@functools.lru_cache(maxsize=64)
def _traced_calls(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerCall]:
    """Each Dense/Conv layer of ``module`` on one input of ``input_shape``, by kernel path."""
    positions: dict[str, int] = {}

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, nn.Dense | nn.Conv):
            path = f"{_module_path(context.module)}/kernel"
            # A layer called several times costs each call.
            positions[path] = positions.get(path, 0) + _positions(tuple(out.shape))
        return out

    def init(x: jax.Array) -> Any:
        with nn.intercept_methods(record):
            return module.init(jax.random.key(0), x, train=False)

    variables = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    kernels = flatten(variables["params"])
    return {
        path: LayerCall(tuple(int(d) for d in kernels[path].shape), count)
        for path, count in sorted(positions.items())
    }


def layer_shapes(network: Network, params: Params) -> dict[str, LayerCall]:
    """Each Dense/Conv layer by kernel path (``fc1/kernel``, ``block1_1/conv1/kernel``).

    Raises ValueError if ``params`` are not the network's (a kernel of another shape); warns
    about a ``kernel`` leaf that no Dense/Conv call owns, since its FLOPs go uncounted.
    """
    try:
        calls = _traced_calls(network.module, tuple(network.input_shape))
    except TypeError:  # an unhashable module field (a list): trace without the cache
        calls = _traced_calls.__wrapped__(network.module, tuple(network.input_shape))
    flat = flatten(params)
    for path, call in calls.items():
        if path not in flat or tuple(np.shape(flat[path])) != call.kernel_shape:
            found = np.shape(flat[path]) if path in flat else "nothing"
            raise ValueError(
                f"params do not fit the network: {path} should be {call.kernel_shape}, "
                f"found {found}"
            )
    uncounted = [p for p in flat if p.rsplit("/", 1)[-1] == "kernel" and p not in calls]
    if uncounted:
        warnings.warn(
            f"FLOPs leave out {', '.join(uncounted)}: not the kernel of an nn.Dense or nn.Conv",
            stacklevel=2,
        )
    return dict(calls)  # a copy: the cached dict stays as traced


def _ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``, or None (JSON null) when nothing is left to divide by."""
    return numerator / denominator if denominator else None


def cost_report(network: Network, params: Params, mask: Mask | None) -> dict[str, Any]:
    """Parameters and FLOPs of the pruned network against the dense one (``mask=None``: dense).

    ``nonzero_params`` counts the mask's True entries over every leaf, biases and BatchNorm
    included. ShrinkBench counts nonzero values instead; the two agree when pruned weights are
    exactly 0 (invariant 1), except that ours does not count a weight as pruned for happening
    to be 0 (Flax initialises biases to 0, which a value count would call pruned).

    ``compression_ratio`` = ``total_params / nonzero_params`` and ``theoretical_speedup`` =
    ``dense_flops / flops`` are None when their denominator is 0 (everything pruned). All
    values are Python ints, floats or None, so the report can go to JSON as it is.
    """
    flat_params = flatten(params)
    flat_mask = flatten(mask) if mask is not None else {}
    if mask is not None and set(flat_mask) != set(flat_params):
        raise ValueError("the mask is not shaped like the params: their leaves differ")

    def alive(path: str) -> int:
        if mask is None:
            return int(np.size(flat_params[path]))
        return int(np.count_nonzero(flat_mask[path]))

    layers = {}
    for path, call in layer_shapes(network, params).items():
        layers[path] = {"flops": alive(path) * call.positions, "dense_flops": call.dense_flops}
    total = sum(int(np.size(leaf)) for leaf in flat_params.values())
    nonzero = sum(alive(path) for path in flat_params)
    flops = sum(layer["flops"] for layer in layers.values())
    dense_flops = sum(layer["dense_flops"] for layer in layers.values())
    return {
        "nonzero_params": nonzero,
        "total_params": total,
        "compression_ratio": _ratio(total, nonzero),
        "flops": flops,
        "dense_flops": dense_flops,
        "theoretical_speedup": _ratio(dense_flops, flops),
        "layer_flops": layers,
    }
