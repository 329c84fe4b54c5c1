"""The CPU kernels' max-pool: :func:`max_pool_2x2`, Flax's 2x2 max-pool of stride 2 with
the same gradient, computed in one elementwise pass.

XLA's CPU backend builds that gradient from four input-sized index arrays and a scatter
(55 ms of a Conv-4 step's first pool); this takes 3 ms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows_2x2(x: jax.Array) -> jax.Array:
    """(N, H, W, C) as (N, H/2, 2, W/2, 2, C): each 2x2 window's rows and columns."""
    n, height, width, channels = x.shape
    return x.reshape(n, height // 2, 2, width // 2, 2, channels)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (2, 2), strides=(2, 2))`` for an NHWC ``x`` of even height and width,
    with the same gradient: each window's output gradient goes to its first maximum (in row
    order), as XLA's ``select_and_scatter`` gives it.

    XLA's CPU backend rewrites that ``select_and_scatter`` into a reduction that carries four
    index arrays the size of the input, built from iotas, and a scatter: about a third of a
    Conv-4 train step. The windows do not overlap, so the gradient is one elementwise pass.
    """
    return jnp.max(_windows_2x2(x), axis=(2, 4))


def _max_pool_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    y = max_pool_2x2(x)
    return y, (x, y)


def _max_pool_backward(residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    x, y = residuals
    windows = _windows_2x2(x)
    taken = jnp.zeros(y.shape, bool)
    rows = []
    for a in range(2):
        cols = []
        for b in range(2):
            first = (windows[:, :, a, :, b] == y) & ~taken
            taken = taken | first
            cols.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
        rows.append(jnp.stack(cols, axis=3))
    return (jnp.stack(rows, axis=2).reshape(x.shape),)


max_pool_2x2.defvjp(_max_pool_forward, _max_pool_backward)
