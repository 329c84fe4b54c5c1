"""On-device augmentation for the train step: pure jax, jit-able, usable inside ``lax.scan``."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop (after zero-padding by ``pad``) and random horizontal flip, per example.

    For a batch of NHWC images, each example is padded by ``pad`` pixels on every side,
    cropped back to H x W at a uniformly random offset in ``[0, 2 * pad]`` on each axis, and
    mirrored left-right with probability 1/2 — CIFAR's standard ``RandomCrop(32, padding=4)``
    plus ``RandomHorizontalFlip()``. Offsets and flips are drawn independently per example
    from ``key``, so the same key gives the same result and different keys differ.

    The padding value is 0 in the space of ``images``. Torchvision pads the raw image with
    black and normalises afterwards, so its border is ``-mean / std``; our images are already
    normalised (train-split per-channel mean 0), so 0 here is the mean colour, not black. The
    raw value cannot be recovered without the normalisation constants; on normalised data the
    difference is a constant border colour.
    """
    n, height, width, channels = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (n,))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(image: jax.Array, offset: jax.Array, flip: jax.Array) -> jax.Array:
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flips)
