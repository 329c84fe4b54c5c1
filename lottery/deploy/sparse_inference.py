"""Unstructured tickets run with sparse matrix products, to see whether sparsity pays at all.

A mask makes no network faster by itself: the zeros are still multiplied. Here each Dense
layer's pruned kernel is stored as a ``jax.experimental.sparse`` BCOO matrix (indices and
values of the alive weights only) and multiplied as one; every other layer runs as before.
Whether this beats the dense product depends on the sparsity, the batch and the machine:
:func:`lottery.deploy.latency.forward_latency` measures it, and ``benchmarks/sparse_inference.py``
finds the sparsity at which it starts to win, if any.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from lottery.models.network import BatchStats, Network, Params
from lottery.pruning.mask import Mask, flatten


def sparse_kernels(params: Params, mask: Mask) -> dict[str, sparse.BCOO]:
    """Each pruned Dense kernel (2-D, some weight pruned), transposed, as BCOO, by layer."""
    flat_params, flat_mask = flatten(params), flatten(mask)
    found = {}
    for path, kernel in flat_params.items():
        alive = np.asarray(flat_mask.get(path, True), bool)
        if path.endswith("/kernel") and np.ndim(kernel) == 2 and not alive.all():
            dense_t = np.where(alive, np.asarray(kernel), 0.0).T
            found[path.removesuffix("/kernel")] = sparse.BCOO.fromdense(jnp.asarray(dense_t))
    return found


def sparse_forward(
    network: Network, params: Params, batch_stats: BatchStats, mask: Mask
) -> Callable[[Any], Any]:
    """A jitted ``forward(x) -> logits`` (eval mode) with sparse Dense products."""
    kernels = sparse_kernels(params, mask)
    flat = flatten(params)

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        layer = "/".join(module.scope.path) if module.scope is not None else ""
        if not (isinstance(module, nn.Dense) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        if layer not in kernels:
            return next_fun(*args, **kwargs)
        x = args[0]
        rows = x.reshape(-1, x.shape[-1])
        y = (kernels[layer] @ rows.T).T  # (out, in) sparse times (in, batch) dense
        if f"{layer}/bias" in flat:
            y = y + flat[f"{layer}/bias"]
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def forward(x: Any) -> Any:
        with nn.intercept_methods(interceptor):
            return network.apply(params, batch_stats, x, train=False)[0]

    return jax.jit(forward)
