"""The first-order Taylor criterion for neurons and channels (Molchanov et al. 2017).

Removing unit c of a layer sets its output feature map z_c to 0; to first order the loss
changes by -<dL/dz_c, z_c>. The criterion is the size of that change, per example:

    Θ(c) = mean over examples of | mean over positions of z_c · dL/dz_c |

with z the output that vanishes when the unit is pruned: the BatchNorm's output behind a
convolution (its scale and shift are pruned with it), else the Dense or Conv layer's output
(bias included). A residual stream's channel is carried by several such outputs (the stem
and each block's last BatchNorm): their products are summed before the absolute value, the
first-order change of removing the channel everywhere at once.

The activations and their gradients come from one forward and backward pass per batch, by
default in training mode, as during the fine-tuning in which the paper computes the criterion
(each BatchNorm normalises by the batch's statistics; the running statistics are only read,
never updated), or in evaluation mode with ``score_mode="eval"``. A zero is added to each
output (``nn.intercept_methods``) and the loss is differentiated with respect to it.

Scores are normalised per layer by their L2 norm (the paper's layer-wise normalisation, Θ(c) /
||Θ of its layer||₂), which is what makes layers comparable: ``structured_prune`` with
``scope=global`` ranks these normalised scores as they are (it divides only the weight norms by
their layer's mean). The FLOPs-regularised variant subtracts ``flops_weight`` times each unit's
share of the network's multiply-adds, scaled so that the costliest unit counts 1 (the paper
weighs raw FLOPs with a small λ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lottery.models.network import BatchStats, Network, Params
from lottery.pruning.at_init import is_train_mode
from lottery.pruning.mask import Mask, apply_mask, layer_of
from lottery.pruning.structured import UnitGroup

Batch = tuple[Any, Any]


def output_layers(group: UnitGroup) -> list[str]:
    """The layers whose outputs carry the group's units: its BatchNorms if it has any (they
    come after the kernels), else its kernels' layers."""
    norms = sorted({layer_of(path) for path, _ in group.producers if path.endswith("/scale")})
    return norms or sorted({layer_of(path) for path, _ in group.kernels})


def _products(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    layers: list[str],
    x: Any,
    y: Any,
    train: bool = True,
) -> dict[str, jax.Array]:
    """Per layer: mean over positions of z · dL/dz, shape (examples, units)."""

    def capture(perturbations: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        outputs: dict[str, Any] = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            scope = context.module.scope
            name = "/".join(scope.path) if scope is not None else ""
            if context.method_name == "__call__" and name in layers:
                outputs[name] = out
                if perturbations is not None:
                    out = out + perturbations[name]
            return out

        with nn.intercept_methods(interceptor):
            logits, _ = network.apply(params, batch_stats, x, train=train)
        return logits, outputs

    shapes = jax.eval_shape(lambda: capture(None)[1])
    zeros = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}

    def loss(perturbations: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        logits, outputs = capture(perturbations)
        value = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        # The mean over the batch: undo it so that each example's gradient is its own.
        return value * y.shape[0], outputs

    grads, outputs = jax.grad(loss, has_aux=True)(zeros)
    return {
        name: jnp.mean(outputs[name] * grads[name], axis=tuple(range(1, grads[name].ndim - 1)))
        for name in layers
    }


_jitted_products = jax.jit(_products, static_argnums=(0, 3, 6))


def taylor_scores(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    mask: Mask,
    groups: Sequence[UnitGroup],
    batches: Sequence[Batch],
    unit_flops: Sequence[np.ndarray] | None = None,
    flops_weight: float = 0.0,
    score_mode: str = "train",
) -> list[np.ndarray]:
    """Each group's Taylor scores (one per unit), normalised per group, the network run in
    ``score_mode`` (``train`` or ``eval``); see the module."""
    if not batches:
        raise ValueError("the Taylor criterion needs at least one batch of (inputs, labels)")
    train = is_train_mode(score_mode)
    layers_of = [output_layers(group) for group in groups]
    layers = sorted({layer for group_layers in layers_of for layer in group_layers})
    masked = apply_mask(params, mask)
    sums = [np.zeros(group.size) for group in groups]
    count = 0
    for x, y in batches:
        products = _jitted_products(network, masked, batch_stats, tuple(layers), x, y, train)
        products = jax.device_get(products)
        for i, group_layers in enumerate(layers_of):
            change = sum(np.asarray(products[layer], np.float64) for layer in group_layers)
            sums[i] += np.abs(change).sum(axis=0)
        count += len(y)
    scores = []
    for i, total in enumerate(sums):
        score = total / count
        norm = np.linalg.norm(score)
        score = score / norm if norm > 0 else score
        if unit_flops is not None and flops_weight:
            score = score - flops_weight * unit_flops[i]
        scores.append(score)
    return scores


def unit_flops(network: Network, params: Params, groups: Sequence[UnitGroup]) -> list[np.ndarray]:
    """Each unit's multiply-adds per example (its producer kernels' slice and the next
    layers' input slice), scaled so that the costliest unit of the network is 1."""
    from lottery.pruning.cost import layer_shapes

    calls = layer_shapes(network, params)
    costs = []
    for group in groups:
        cost = 0.0
        for path, axis in group.kernels + tuple(
            (p, a) for p, a in group.consumers if p in calls
        ):
            call = calls[path]
            cost += call.dense_flops / call.kernel_shape[axis]
        costs.append(np.full(group.size, cost))
    top = max((float(c.max()) for c in costs if c.size), default=1.0) or 1.0
    return [c / top for c in costs]
