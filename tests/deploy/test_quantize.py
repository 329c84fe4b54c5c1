"""Qwix's int8 quantization of a BatchNorm network (``deploy.quantize=int8_dynamic``): it
builds (BatchNorm's ``train`` stays a Python bool while Qwix traces the network's shapes),
keeps pruned weights at 0, and gives about the float network's logits."""

from __future__ import annotations

import jax
import numpy as np
from test_compact import random_network

from lottery.deploy.quantize import quantize, zeros_kept
from lottery.pruning import apply_mask, flatten, full_mask, unflatten


def test_int8_dynamic_quantizes_a_batchnorm_network_and_keeps_its_pruned_weights_zero():
    network, params, stats = random_network("resnet20", (32, 32, 3), width=4)
    rng = np.random.default_rng(1)
    mask = unflatten({
        path: (rng.random(np.shape(m)) < 0.5) if path.endswith("kernel") else m
        for path, m in flatten(full_mask(params)).items()
    })
    params = apply_mask(params, mask)
    quantized = quantize(network, params, stats, "int8_dynamic")
    x = jax.random.normal(jax.random.key(2), (8, 32, 32, 3))
    floats = np.asarray(network.apply(params, stats, x, train=False)[0])
    int8 = np.asarray(quantized.forward(x))
    assert zeros_kept(quantized, mask)
    # int8 weights and activations: close to the float logits, not equal to them.
    error = np.abs(int8 - floats).max() / np.abs(floats).max()
    assert error < 0.1, error
    assert not np.array_equal(int8, floats)
