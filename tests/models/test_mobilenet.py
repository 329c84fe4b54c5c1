"""MobileNetV2: torchvision's parameter count and layers, the paper's blocks (depthwise
convolutions, ReLU6, linear bottlenecks, identity shortcuts), structured channel groups of
inverted residuals, and the structured preset on mock CIFAR-10.

Shapes come from ``jax.eval_shape`` where values are not needed; forward passes run at
width 8 (width multiplier 0.25) on 8x8 images.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lottery.config import ModelConfig
from lottery.experiment import run as run_experiment
from lottery.kernels import convolution
from lottery.models import build
from lottery.models.mobilenet import IMAGENET_PLAN, make_divisible
from lottery.pruning import flatten, full_mask, unflatten
from lottery.pruning.structured import structured_prune, unit_groups

from conftest import make_config, summaries

SMALL_IMAGE = (8, 8, 3)


def shapes(name: str, input_shape: tuple[int, ...], classes: int = 10, width: int = 0):
    network = build(ModelConfig(name=name, width=width), input_shape, classes)
    params, stats = jax.eval_shape(network.init, jax.random.key(0))
    return network, params, stats


def block_outputs(network, params, stats, x, train: bool = False) -> dict[str, jax.Array]:
    """Each block's output (and the other modules'), by module path."""
    variables = {"params": params, "batch_stats": stats}
    apply = jax.jit(lambda v, x: network.module.apply(  # jitted: eagerly it takes seconds
        v, x, train=train, capture_intermediates=True, mutable=["intermediates"]))
    _, state = apply(variables, x)
    return {path.rsplit("/", 1)[0]: value[0] for path, value in
            flatten(state["intermediates"]).items()}


def test_imagenet_parameter_count_is_torchvisions() -> None:
    _, params, _ = shapes("mobilenetv2", (224, 224, 3), 1000)
    assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)) == 3_504_872


def parameter_count(params) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def test_cifar_parameter_count() -> None:
    # The paper's blocks with 10 classes (kuangliu/pytorch-cifar's port differs: it adds
    # projection shortcuts and a t = 1 expansion, as the preset's header says).
    assert parameter_count(shapes("mobilenetv2_cifar", (32, 32, 3))[1]) == 2_236_682


def test_make_divisible_rounds_as_torchvision() -> None:
    # torchvision's _make_divisible at widths 0.35, 0.5 and 1.4 (e.g. 32 * 0.35 = 11.2 -> 16:
    # 8 would be more than 10% below).
    cases = {11.2: 16, 5.6: 8, 8.4: 8, 33.6: 32, 44.8: 48, 22.4: 24, 1280: 1280, 1792: 1792}
    assert {value: make_divisible(value) for value in cases} == cases


def test_layers_follow_the_papers_table() -> None:
    _, params, _ = shapes("mobilenetv2", (224, 224, 3), 1000)
    kernels = {p: leaf.shape for p, leaf in flatten(params).items() if p.endswith("kernel")}
    assert kernels["stem_conv/kernel"] == (3, 3, 3, 32)
    channels = 32
    for stage, (t, c, n, _) in enumerate(IMAGENET_PLAN, start=1):
        for index in range(1, n + 1):
            block = f"block{stage}_{index}"
            hidden = channels * t
            assert (f"{block}/expand_conv/kernel" in kernels) == (t != 1)
            if t != 1:
                assert kernels[f"{block}/expand_conv/kernel"] == (1, 1, channels, hidden)
            assert kernels[f"{block}/depthwise_conv/kernel"] == (3, 3, 1, hidden)  # depthwise
            assert kernels[f"{block}/project_conv/kernel"] == (1, 1, hidden, c)
            channels = c
        assert f"block{stage}_{n + 1}/project_conv/kernel" not in kernels
    assert kernels["head_conv/kernel"] == (1, 1, 320, 1280)
    assert kernels["out/kernel"] == (1280, 1000)
    assert not any(p.endswith("conv/bias") for p in flatten(params))


@pytest.mark.parametrize(("name", "size", "final"), [("mobilenetv2", 224, 7),
                                                     ("mobilenetv2_cifar", 32, 4)])
def test_strides(name: str, size: int, final: int) -> None:
    """ImageNet: /32 (stem and stages 2, 3, 4, 6 at stride 2); CIFAR: /8 (stem and stage 2 at
    stride 1, as kuangliu/pytorch-cifar)."""
    network, params, stats = shapes(name, (size, size, 3), width=8)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    outputs = jax.eval_shape(lambda p, s, x: block_outputs(network, p, s, x), params, stats, x)
    assert outputs["head_conv"].shape[1:3] == (final, final)
    first = {"mobilenetv2": size // 2, "mobilenetv2_cifar": size}[name]
    assert outputs["block1_1"].shape[1] == first
    second = first // 2 if name == "mobilenetv2" else first
    assert outputs["block2_1"].shape[1] == second


def small_network():
    network = build(ModelConfig(name="mobilenetv2_cifar", width=8), SMALL_IMAGE, 10)
    params, stats = network.init(jax.random.key(0))
    return network, params, stats


@pytest.mark.slow
def test_identity_shortcut_only_on_the_repeated_blocks_of_a_stage() -> None:
    """With its projection's BatchNorm zeroed, a block adds nothing: a repeated block
    passes its input through, a stage's first block (no shortcut) outputs 0."""
    network, params, stats = small_network()
    flat = flatten(params)
    for block in ("block2_2", "block3_1"):
        for leaf in ("scale", "bias"):
            path = f"{block}/project_bn/{leaf}"
            flat[path] = jnp.zeros_like(flat[path])
    x = jax.random.normal(jax.random.key(1), (2, *SMALL_IMAGE))
    out = block_outputs(network, unflatten(flat), stats, x)
    assert np.any(out["block2_1"])
    np.testing.assert_array_equal(out["block2_2"], out["block2_1"])
    assert not np.any(out["block3_1"])


@pytest.mark.slow
def test_relu6_depthwise_filters_and_linear_bottleneck() -> None:
    """A stem saturated by ReLU6 gives 6 everywhere; the depthwise convolution filters each
    channel with its own 3x3 filter; the projection has no activation (negative outputs)."""
    network, params, stats = small_network()
    flat = flatten(params)
    flat["stem_bn/scale"] = jnp.zeros_like(flat["stem_bn/scale"])
    flat["stem_bn/bias"] = jnp.full_like(flat["stem_bn/bias"], 100.0)
    x = jax.random.normal(jax.random.key(1), (1, *SMALL_IMAGE))
    out = block_outputs(network, unflatten(flat), stats, x)
    kernel = np.asarray(flat["block1_1/depthwise_conv/kernel"])  # (3, 3, 1, 8): t = 1
    inner = np.asarray(out["block1_1/depthwise_conv"])[0, 1:-1, 1:-1]  # away from the padding
    np.testing.assert_allclose(inner, np.broadcast_to(6.0 * kernel.sum(axis=(0, 1, 2)),
                                                      inner.shape), rtol=1e-5)
    assert np.min(out["block2_1"]) < 0  # linear bottleneck: no ReLU after project_bn


def test_inverted_residual_groups() -> None:
    """Expansion channels (with their depthwise filters) are one group per block; a stage's
    output channels, which its residual sums join, are one group; the head is its own."""
    _, params, _ = shapes("mobilenetv2_cifar", (32, 32, 3))
    groups = {group.name: group for group in unit_groups(params)}
    expansions = {f"block{s}_{i}/expand" for s, (t, _, n, _) in enumerate(IMAGENET_PLAN, 1)
                  for i in range(1, n + 1) if t != 1}
    assert set(groups) == {"stem", "head", *(f"stage{s}" for s in range(1, 8))} | expansions
    assert groups["block3_2/expand"].producers == (
        ("block3_2/expand_conv/kernel", 3), ("block3_2/expand_bn/scale", 0),
        ("block3_2/expand_bn/bias", 0), ("block3_2/depthwise_conv/kernel", 3),
        ("block3_2/depthwise_bn/scale", 0), ("block3_2/depthwise_bn/bias", 0),
    )
    assert groups["block3_2/expand"].consumers == (("block3_2/project_conv/kernel", 2),)
    assert groups["block3_2/expand"].size == 192
    # block1_1 has no expansion: its depthwise filters are the stem's channels.
    assert ("block1_1/depthwise_conv/kernel", 3) in groups["stem"].producers
    assert groups["stem"].consumers == (("block1_1/project_conv/kernel", 2),)
    stage3 = groups["stage3"]
    assert [p for p, _ in stage3.kernels] == [f"block3_{i}/project_conv/kernel" for i in (1, 2, 3)]
    assert [p for p, _ in stage3.consumers] == [
        "block3_2/expand_conv/kernel", "block3_3/expand_conv/kernel", "block4_1/expand_conv/kernel"
    ]
    assert groups["stage7"].consumers == (("head_conv/kernel", 2),)
    assert groups["head"].consumers == (("out/kernel", 0),)


def test_structured_pruning_of_inverted_residuals() -> None:
    """Exact counts per group; a dead expansion channel loses its depthwise filter and its
    projection input; a dead stream channel is dead in every block adding to it."""
    _, params, _ = shapes("mobilenetv2_cifar", SMALL_IMAGE, width=8)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), params)
    mask = flatten(structured_prune(params, full_mask(params), 0.25))
    block = "block3_2"
    dead = np.flatnonzero(~mask[f"{block}/expand_conv/kernel"].any(axis=(0, 1, 2)))
    assert len(dead) == round(0.25 * 48)
    assert set(np.flatnonzero(~mask[f"{block}/depthwise_conv/kernel"].any(axis=(0, 1, 2)))) == set(
        dead)
    for leaf in ("expand_bn/scale", "depthwise_bn/bias"):
        assert set(np.flatnonzero(~mask[f"{block}/{leaf}"])) == set(dead)
    assert set(np.flatnonzero(~mask[f"{block}/project_conv/kernel"].any(axis=(0, 1, 3)))) == set(
        dead)
    stream = [set(np.flatnonzero(~mask[f"block4_{i}/project_conv/kernel"].any(axis=(0, 1, 2))))
              for i in (1, 2, 3, 4)]
    assert len(stream[0]) == round(0.25 * 16) and all(s == stream[0] for s in stream)
    readers = [f"block4_{i}" for i in (2, 3, 4)] + ["block5_1"]
    for reader in (f"{block}/expand_conv/kernel" for block in readers):
        assert set(np.flatnonzero(~mask[reader].any(axis=(0, 1, 3)))) == stream[0]


@pytest.mark.slow
def test_the_structured_preset_runs_two_levels_on_mock_cifar(tmp_path) -> None:
    small = ["model.width=8", "pruning.levels=1", "pruning.rewind_step=2it", "train.steps=4it",
             "train.batch_size=4", "train.eval_every=2it", "train.eval_batch_size=8",
             "progress=false"]
    cfg = make_config(["+experiment=mobilenetv2_cifar_structured", *small,
                       f"dataset.path={tmp_path / 'tfds'}"], tmp_path)
    assert cfg.model.name == "mobilenetv2_cifar" and cfg.pruning.method == "structured"
    with tfds.testing.mock_data(num_examples=40):
        run_experiment(cfg)
    found = summaries(tmp_path)
    assert sorted(found) == [(0, 0), (0, 1)]
    assert found[(0, 0)]["params_total"] == parameter_count(
        shapes("mobilenetv2_cifar", (32, 32, 3), width=8)[1]
    )
    level = found[(0, 1)]
    assert level["start_iteration"] == 2
    assert level["compacted"]["params"] < level["compacted"]["dense"]["params"]
    assert level["theoretical_speedup"] > 1.0


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.slow
def test_depthwise_taps_equal_xlas_grouped_convolution(stride: int) -> None:
    """The CPU kernels' depthwise convolution (convolution.depthwise_taps), its value and
    gradients, against lax.conv_general_dilated with one group per channel."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))
    w = jax.random.normal(jax.random.key(1), (3, 3, 1, 6))

    def xla(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), ((1, 1), (1, 1)), feature_group_count=6,
            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def taps(x, w):
        return convolution.cpu_conv(x, w, (stride, stride), [(1, 1), (1, 1)],
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=6, train=False)

    np.testing.assert_allclose(taps(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), argnums=(0, 1))(x, w)
             for f in (taps, xla)]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # On the CPU the taps run, not XLA's grouped convolution (both are in the program).
    assert "platform_index" in str(jax.make_jaxpr(taps)(x, w))
