"""The jit-compiled masked train steps and the batched evaluation.

One call of the train function runs ``num_steps`` steps in a ``lax.scan``: for each, gather
the batch by index on the device, forward, loss, grads, mask the grads, optax update, mask
the updated weights. The mask is an argument (not a constant), so every level reuses the same
compiled code; the state is donated.

Masking the grads keeps optimizer moments of pruned weights at exactly 0; masking the new
weights as ``where(mask, params + updates, 0)`` is the update mask written so that XLA fuses it
into the parameter update itself (one pass over the weights, as in the dense step), and it
holds pruned weights at exactly +0.0 whatever the optimizer does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lottery.models import Network
from lottery.train.optim import Schedule, with_learning_rate
from lottery.train.state import TrainState

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, images) -> images


def masked_update(params: Any, updates: Any, mask: Any) -> Any:
    """``params + updates`` with every pruned entry exactly +0.0 (plain sum if mask is None)."""
    if mask is None:
        return optax.apply_updates(params, updates)
    return jax.tree.map(
        lambda p, u, m: jnp.where(m, p + u, jnp.zeros_like(p)), params, updates, mask
    )


def masked(tree: Any, mask: Any) -> Any:
    """``tree`` with every entry the mask prunes set to exactly 0 (unchanged if mask is None).

    ``mask=None`` gives the plain dense step, which benchmarks compare the masked one with.
    """
    if mask is None:
        return tree
    return jax.tree.map(lambda t, m: jnp.where(m, t, jnp.zeros_like(t)), tree, mask)


PRECISIONS = {"fp32": None, "bf16": jnp.bfloat16}


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves cast to ``dtype`` (integers left alone)."""
    return jax.tree.map(
        lambda t: t.astype(dtype) if jnp.issubdtype(t.dtype, jnp.floating) else t, tree
    )


def make_loss(network: Network, precision: str = "fp32") -> Callable[..., Any]:
    """``loss(params, batch_stats, x, y) -> (mean cross-entropy, new batch_stats)`` of the
    network in train mode, computed in ``precision`` (see :func:`make_step`)."""
    compute = PRECISIONS[precision]

    def loss_fn(params, batch_stats, x, y):
        if compute is not None:
            params, x = cast_floating(params, compute), x.astype(compute)
            stats_in = cast_floating(batch_stats, compute)
        else:
            stats_in = batch_stats
        logits, new_batch_stats = network.apply(params, stats_in, x, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), y
        ).mean()
        if compute is not None:
            new_batch_stats = cast_floating(new_batch_stats, jnp.float32)
        return loss, new_batch_stats

    return loss_fn


def make_dense_gradient(
    network: Network, augment: Augment | None = None, precision: str = "fp32"
) -> Callable[..., Any]:
    """``gradient(params, batch_stats, x, y, key, step) -> grads``: the loss gradient of one
    train step's batch, augmented as that step augments it, for every weight (pruned ones
    included: nothing is masked), jit-compiled. RigL grows where it is largest."""
    loss = make_loss(network, precision)

    def gradient(params, batch_stats, x, y, key, step):
        if augment is not None:
            x = augment(jax.random.fold_in(key, step), x)
        return jax.grad(lambda p: loss(p, batch_stats, x, y)[0])(params)

    return jax.jit(gradient)


def make_step(
    network: Network,
    tx: optax.GradientTransformation,
    schedule: Schedule,
    augment: Augment | None = None,
    precision: str = "fp32",
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """``step(state, mask, x, y, key) -> (state, loss)``: one masked SGD step on one batch.

    ``key`` seeds the step's randomness (augmentation) as ``fold_in(key, step)``, so a step's
    randomness does not depend on how the steps are split into calls.

    ``precision="bf16"``: the forward and backward passes compute in bfloat16 on bfloat16
    copies of the weights, inputs and BatchNorm statistics; the weights themselves, the
    gradients (through the cast), the optimizer and the statistics kept stay float32 (mixed
    precision with float32 master weights). The masks apply to the float32 weights as in
    float32 training, so a pruned weight is still exactly +0.0.
    """
    grad_fn = jax.value_and_grad(make_loss(network, precision), has_aux=True)

    def step(state: TrainState, mask, x, y, key):
        if augment is not None:
            x = augment(jax.random.fold_in(key, state.step), x)
        (loss, batch_stats), grads = grad_fn(state.params, state.batch_stats, x, y)
        opt_state = with_learning_rate(state.opt_state, schedule(state.step))
        updates, opt_state = tx.update(masked(grads, mask), opt_state, state.params)
        params = masked_update(state.params, updates, mask)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, loss

    return step


def fused_steps_limit(params: Any, platform: str | None = None) -> int | None:
    """How many steps one compiled call may fuse in a ``lax.scan`` (None: no limit).

    On the CPU, XLA runs autodiff's kernel-gradient convolutions inside a loop as plain
    loops, not Eigen (orders of magnitude slower than alone), so a network with
    convolutional kernels trains one step per call there, dispatched asynchronously. With
    the CPU kernels (whose :func:`lottery.kernels.convolution.kernel_gradient` is laid out
    for Eigen) a scan runs as fast as single steps, but no faster, while every distinct
    number of fused steps would compile again: so one step per call stays. Dense networks
    gain from fusing, and so does everything on a GPU or TPU. The figures are in
    docs/benchmarks.md, "Design measurements".
    """
    platform = platform or jax.default_backend()
    has_conv = any(np.ndim(leaf) > 2 for leaf in jax.tree.leaves(params))
    return 1 if platform == "cpu" and has_conv else None


def make_train_steps(
    network: Network,
    tx: optax.GradientTransformation,
    schedule: Schedule,
    augment: Augment | None = None,
    precision: str = "fp32",
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """``train_steps(state, mask, x, y, order, key, num_steps) -> (state, mean loss)``,
    jit-compiled with the state donated (see :func:`train_steps_function`)."""
    train_steps = train_steps_function(
        network, tx, schedule, augment, precision, batch_sharding
    )
    return jax.jit(train_steps, static_argnames="num_steps", donate_argnames="state")


def make_replica_train_steps(
    network: Network,
    tx: optax.GradientTransformation,
    schedule: Schedule,
    augment: Augment | None = None,
    precision: str = "fp32",
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """The train steps of many replicas at once (``jax.vmap``): the state, mask, batch order
    and key carry a leading replica axis, the dataset is shared; the loss is one per replica.

    Each replica computes what :func:`make_train_steps` computes for it alone, to float
    rounding (XLA may batch the replicas' matrix products into one).
    """
    train_steps = train_steps_function(network, tx, schedule, augment, precision)
    replicated = jax.vmap(train_steps, in_axes=(0, 0, None, None, 0, 0, None))
    return jax.jit(replicated, static_argnums=6, donate_argnums=0)


def train_steps_function(
    network: Network,
    tx: optax.GradientTransformation,
    schedule: Schedule,
    augment: Augment | None = None,
    precision: str = "fp32",
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """``train_steps(state, mask, x, y, order, key, num_steps) -> (state, mean loss)``.

    ``x, y`` is the whole training set on the device, ``order[s]`` the example indices of
    step ``s``: batches are gathered on the device, inside the scan.

    With ``batch_sharding`` (a batch axis over the local devices), each gathered batch is
    split across the devices and XLA partitions the step (GSPMD): the weights are
    replicated, the gradients and BatchNorm's batch statistics are reduced over the whole
    batch, so the step computes what one device would, to float rounding.
    """
    step = make_step(network, tx, schedule, augment, precision)

    def train_steps(state, mask, x_all, y_all, order, key, num_steps):
        def one_step(state: TrainState, _):
            index = order[state.step]
            x, y = x_all[index], y_all[index]
            if batch_sharding is not None:  # data parallel: each device a slice of the batch
                x = jax.lax.with_sharding_constraint(x, batch_sharding)
                y = jax.lax.with_sharding_constraint(y, batch_sharding)
            return step(state, mask, x, y, key)

        if num_steps == 1:  # no loop at all: see ``fused_steps_limit``
            return one_step(state, None)
        state, losses = jax.lax.scan(one_step, state, length=num_steps)
        return state, jnp.mean(losses)

    return train_steps


def make_streamed_train_steps(
    network: Network,
    tx: optax.GradientTransformation,
    schedule: Schedule,
    augment: Augment | None = None,
    precision: str = "fp32",
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """``train_steps(state, mask, xs, ys, key) -> (state, mean loss)`` over stacked batches.

    For datasets streamed from the host (ImageNet): ``xs, ys`` hold one batch per step,
    stacked on a leading axis, and the scan runs one step per batch.
    """
    step = make_step(network, tx, schedule, augment, precision)

    def train_steps(state, mask, xs, ys, key):
        def one_step(state: TrainState, batch):
            return step(state, mask, *batch, key)

        if xs.shape[0] == 1:  # no loop at all: see ``fused_steps_limit``
            return one_step(state, (xs[0], ys[0]))
        state, losses = jax.lax.scan(one_step, state, (xs, ys))
        return state, jnp.mean(losses)

    return jax.jit(train_steps, donate_argnames="state")


def pad_for_eval(x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    """Split an eval set into equal batches, padding the last: (x, y, weight), batch axis first."""
    n = len(y)
    batch_size = max(1, min(batch_size, n))
    batches = -(-n // batch_size)
    pad = batches * batch_size - n
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    shape = (batches, batch_size)
    return x.reshape(*shape, *x.shape[1:]), y.reshape(shape), weight.reshape(shape)


def make_evaluate(network: Network) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``evaluate(params, batch_stats, x, y, weight) -> (summed loss, correct count)``.

    Takes the batched arrays of :func:`pad_for_eval`; runs the model in eval mode (BatchNorm
    uses its running statistics).
    """

    def evaluate(params, batch_stats, x, y, weight):
        def one_batch(totals, batch):
            xb, yb, wb = batch
            logits, _ = network.apply(params, batch_stats, xb, train=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            correct = (jnp.argmax(logits, axis=-1) == yb).astype(jnp.float32)
            return (totals[0] + jnp.sum(loss * wb), totals[1] + jnp.sum(correct * wb)), None

        zero = jnp.zeros((), jnp.float32)
        if x.shape[0] == 1:  # no loop at all: see ``fused_steps_limit``
            return one_batch((zero, zero), (x[0], y[0], weight[0]))[0]
        totals, _ = jax.lax.scan(one_batch, (zero, zero), (x, y, weight))
        return totals

    return jax.jit(evaluate)
