"""Every registered model: parameter counts, the output layer, logits, BatchNorm statistics.

Shapes come from ``jax.eval_shape`` wherever values are not needed, so even ResNet-50 on
224x224 images costs only a trace.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery.config import ModelConfig
from lottery.models import MODELS, Network, build
from lottery.models.resnet_imagenet import ImageNetResNet

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)
MNIST1D = (40,)

# name -> (input shape, classes, exact parameter count). Each is the reference's own figure
# where it has one: OpenLTH's tests for the CIFAR ResNets and VGGs, torchvision for ResNet-18/
# 34/50; the rest are derived by hand in the comments of test_hand_derived_counts.
COUNTS = {
    "mlp": (MNIST, 10, 89_610),  # 784-100-100-10
    "lenet_300_100": (MNIST, 10, 266_610),
    "conv2": (CIFAR, 10, 4_301_642),
    "conv4": (CIFAR, 10, 2_425_930),
    "conv6": (CIFAR, 10, 2_262_602),
    "resnet20": (CIFAR, 10, 272_474),
    "resnet32": (CIFAR, 10, 466_906),
    "resnet56": (CIFAR, 10, 855_770),
    "resnet110": (CIFAR, 10, 1_730_714),
    "vgg11": (CIFAR, 10, 9_231_114),
    "vgg13": (CIFAR, 10, 9_416_010),
    "vgg16": (CIFAR, 10, 14_728_266),
    "vgg19": (CIFAR, 10, 20_040_522),
    "resnet18": (IMAGENET, 1000, 11_689_512),
    "resnet34": (IMAGENET, 1000, 21_797_672),
    "resnet50": (IMAGENET, 1000, 25_557_032),
    "mnist1d_cnn": (MNIST1D, 10, 5_210),
    "mobilenetv2": (IMAGENET, 1000, 3_504_872),  # torchvision's mobilenet_v2()
    "mobilenetv2_cifar": (CIFAR, 10, 2_236_682),  # the same layers, 10 classes
}

WITH_BATCHNORM = {n for n in COUNTS if n.startswith(("resnet", "vgg", "mobilenet"))}

KEY = jax.random.key(0)


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def abstract(name: str, width: int = 0) -> tuple[Network, dict, dict]:
    """The network ``name`` on its dataset's inputs, with the shapes of its variables."""
    shape, classes, _ = COUNTS[name]
    network = build(ModelConfig(name=name, width=width), shape, classes)
    params, batch_stats = jax.eval_shape(network.init, KEY)
    return network, params, batch_stats


@functools.cache
def initialised(name: str, shape: tuple[int, ...]) -> tuple[Network, dict, dict]:
    """The network ``name`` for ``shape`` with 10 classes, and real initial variables.

    Cached: eager initialisation compiles an XLA computation per layer shape, seconds a model.
    ``bottleneck``: ResNet-50's blocks and stem, one block per stage and width 16 (ResNet-50
    itself took 27 s here).
    """
    if name == "bottleneck":
        network = Network(ImageNetResNet((1, 1, 1, 1), True, 10, 16), shape)
        return network, *network.init(KEY)
    network = build(ModelConfig(name=name), shape, 10)
    return network, *network.init(KEY)


def test_every_model_is_tested() -> None:
    assert set(COUNTS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_count(name: str) -> None:
    _, params, _ = abstract(name)
    assert count(params) == COUNTS[name][2]


def test_hand_derived_counts() -> None:
    """The counts derived from the papers' descriptions, and the papers' rounded figures."""

    def conv(c_in: int, c_out: int, k: int = 3, bias: bool = True) -> int:
        return k * k * c_in * c_out + (c_out if bias else 0)

    def dense(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    assert COUNTS["lenet_300_100"][2] == dense(784, 300) + dense(300, 100) + dense(100, 10)

    # Frankle & Carbin 2019, Figure 2: all weights 4.3M / 2.4M / 1.7M, convolutions 38K / 260K /
    # 1.1M. The listed architecture gives 2.26M for Conv-6 (its 4096-256-256-10 classifier
    # alone is 1.1M); only that total disagrees, the convolutions match.
    convs = {
        "conv2": conv(3, 64) + conv(64, 64),
        "conv4": conv(3, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128),
    }
    convs["conv6"] = convs["conv4"] + conv(128, 256) + conv(256, 256)
    flat = {"conv2": 16 * 16 * 64, "conv4": 8 * 8 * 128, "conv6": 4 * 4 * 256}
    for name in convs:
        fc = dense(flat[name], 256) + dense(256, 256) + dense(256, 10)
        assert COUNTS[name][2] == convs[name] + fc
    for name, paper in {"conv2": 38e3, "conv4": 260e3, "conv6": 1.1e6}.items():
        assert convs[name] == pytest.approx(paper, rel=0.05)
    for name, paper in {"conv2": 4.3e6, "conv4": 2.4e6}.items():
        assert COUNTS[name][2] == pytest.approx(paper, rel=0.03)

    # ResNet-20: stem, three stages of three blocks, 1x1 shortcuts into stages 2 and 3; every
    # BatchNorm has a scale and a bias per channel.
    def block(c_in: int, c_out: int) -> int:
        own = conv(c_in, c_out, bias=False) + conv(c_out, c_out, bias=False) + 4 * c_out
        return own + (conv(c_in, c_out, 1, bias=False) + 2 * c_out if c_in != c_out else 0)

    stages = sum(block(i, o) + 2 * block(o, o) for i, o in [(16, 16), (16, 32), (32, 64)])
    assert COUNTS["resnet20"][2] == conv(3, 16, bias=False) + 2 * 16 + stages + dense(64, 10)

    # VGG-16: biased convolutions (as OpenLTH's), BatchNorm, 512 -> 10.
    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    vgg16 = sum(conv(i, o) + 2 * o for i, o in zip([3, *plan[:-1]], plan, strict=True))
    assert COUNTS["vgg16"][2] == vgg16 + dense(512, 10) == pytest.approx(14.72e6, rel=1e-3)

    # MNIST-1D ConvBase: 40 -> 19 -> 10 -> 5 positions of 25 channels.
    cnn = 5 * 25 + 25 + 2 * (3 * 25 * 25 + 25) + dense(5 * 25, 10)
    assert COUNTS["mnist1d_cnn"][2] == cnn


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_output_layer_logits_and_batch_stats(name: str) -> None:
    network, params, batch_stats = abstract(name)
    classes = COUNTS[name][1]
    assert params["out"]["kernel"].shape[-1] == classes
    assert params["out"]["bias"].shape == (classes,)
    x = jax.ShapeDtypeStruct((3, *network.input_shape), jnp.float32)
    for train in (False, True):
        logits, _ = jax.eval_shape(
            lambda p, b, x, t=train: network.apply(p, b, x, t), params, batch_stats, x
        )
        assert logits.shape == (3, classes)
    assert bool(batch_stats) == (name in WITH_BATCHNORM)
    if batch_stats:
        # Running mean and variance for every BatchNorm's scale and bias.
        assert count(batch_stats) == sum(
            math.prod(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if path[-2].key.startswith("bn") or path[-2].key.endswith("_bn")
        )


# Basic blocks (CIFAR and ImageNet ResNets share them), VGG, and bottlenecks behind the
# ImageNet stem, on small images: the shapes of ResNet-18/34 are covered by eval_shape above.
@pytest.mark.parametrize(
    "name",  # the larger networks compile for seconds: the whole suite only
    ["resnet20", *(pytest.param(n, marks=pytest.mark.slow) for n in ("vgg11", "bottleneck"))],
)
def test_batchnorm_statistics_update_only_in_training(name: str) -> None:
    network, params, batch_stats = initialised(name, CIFAR)
    apply = jax.jit(network.apply, static_argnames="train")
    x = jax.random.normal(jax.random.key(1), (4, *CIFAR)) * 3.0 + 1.0

    logits, after_eval = apply(params, batch_stats, x, train=False)
    assert logits.shape == (4, 10) and bool(jnp.all(jnp.isfinite(logits)))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, after_eval, batch_stats))

    logits, after_train = apply(params, batch_stats, x, train=True)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert jax.tree.structure(after_train) == jax.tree.structure(batch_stats)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), after_train, batch_stats)
    assert all(jax.tree.leaves(changed))  # every mean and variance moved


@pytest.mark.parametrize(("name", "shape"), [("conv2", CIFAR), ("mnist1d_cnn", MNIST1D)])
def test_models_without_batchnorm_run(name: str, shape: tuple[int, ...]) -> None:
    network, params, batch_stats = initialised(name, shape)
    assert batch_stats == {}
    logits, after = network.apply(params, batch_stats, jnp.ones((2, *shape)), train=True)
    assert logits.shape == (2, 10) and after == {}


def test_initialisation() -> None:
    """Kernels from model.init (untruncated He normal), zero biases, BatchNorm scale 1, bias 0."""
    _, params, batch_stats = initialised("resnet20", CIFAR)
    kernel = params["block3_2"]["conv1"]["kernel"]  # 3 x 3 x 64 x 64
    assert float(jnp.std(kernel)) == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    assert float(jnp.max(jnp.abs(kernel))) > 2 * math.sqrt(2 / (9 * 64))  # not truncated at 2σ
    assert not jnp.any(params["out"]["bias"])
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key == "scale":
            assert bool(jnp.all(leaf == 1))
        elif path[-1].key == "bias":
            assert not jnp.any(leaf)
    assert "bias" not in params["stem_conv"] and "bias" not in params["block2_1"]["shortcut_conv"]
    assert set(batch_stats["stem_bn"]) == {"mean", "var"}

    glorot = build(ModelConfig(name="conv2", init="glorot_normal"), CIFAR, 10)
    kernel = glorot.init(KEY)[0]["fc1"]["kernel"]  # 16384 x 256
    assert float(jnp.std(kernel)) == pytest.approx(math.sqrt(2 / (16384 + 256)), rel=0.02)


def test_width() -> None:
    """model.width is the base width; 0 is the paper's."""
    _, params, _ = abstract("resnet20", width=16)
    assert count(params) == COUNTS["resnet20"][2]
    _, params, _ = abstract("resnet20", width=32)
    assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 32)
    assert params["out"]["kernel"].shape == (128, 10)
    for name, layer, channels in [
        ("vgg11", "conv2", 256),
        ("conv4", "conv4", 256),
        ("resnet18", "stem_conv", 128),
        ("mnist1d_cnn", "conv3", 50),
    ]:
        _, params, _ = abstract(name, width=2 * {"mnist1d_cnn": 25}.get(name, 64))
        assert params[layer]["kernel"].shape[-1] == channels


def test_model_configs() -> None:
    """conf/model/<name>.yaml exists for every model and names it."""
    for name in MODELS:
        file = Path(__file__).parents[2] / "conf" / "model" / f"{name}.yaml"
        assert OmegaConf.load(file).name == name


def test_openlth_initialisation_of_batchnorm_scales_and_biases():
    import math

    import jax
    import numpy as np

    from lottery.config import ModelConfig
    from lottery.models import build
    from lottery.pruning import flatten

    def init(**options):
        net = build(ModelConfig(name="resnet20", width=4, **options), (32, 32, 3), 10)
        return flatten(net.init(jax.random.key(0))[0])

    plain, openlth = init(), init(batchnorm_init="uniform", bias_init="pytorch")
    scales = [p for p in plain if p.endswith("/scale")]
    assert scales and all(np.all(plain[p] == 1.0) for p in scales)
    values = np.concatenate([openlth[p] for p in scales])
    assert values.min() >= 0.0 and values.max() < 1.0 and values.std() > 0.2  # U[0, 1)
    assert all(np.all(openlth[p.replace("scale", "bias")] == 0.0) for p in scales)  # shifts 0
    bound = 1 / math.sqrt(openlth["out/kernel"].shape[0])
    assert np.all(plain["out/bias"] == 0.0)
    assert 0 < np.abs(openlth["out/bias"]).max() <= bound
    for path in plain:  # the kernels are the same draws either way
        if path.endswith("kernel"):
            np.testing.assert_array_equal(plain[path], openlth[path])


@pytest.mark.parametrize("shape", [(40, 100), (5, 1, 25), (3, 3, 3, 16), (1, 1, 64, 256)])
def test_kernel_initialisers_draw_what_jax_draws(shape: tuple[int, ...]) -> None:
    """Ours draw flat and reshape (fast to compile); the numbers must be JAX's own."""
    from jax.nn.initializers import variance_scaling

    from lottery.models.init import INITIALIZERS

    jax_own = {
        "kaiming_normal": variance_scaling(2.0, "fan_in", "normal"),
        "glorot_normal": variance_scaling(1.0, "fan_avg", "normal"),
    }
    assert set(INITIALIZERS) == set(jax_own)
    for name, init in INITIALIZERS.items():
        ours, reference = init(KEY, shape), jax_own[name](KEY, shape)
        assert ours.dtype == reference.dtype and np.array_equal(ours, reference), name


@pytest.mark.parametrize("name", ["resnet20", "mnist1d_cnn"])
def test_network_init_equals_flax_init_with_a_forward_pass(name: str) -> None:
    """Network.init skips the forward pass (lazy_init); the variables must be Flax's init's."""
    shape = CIFAR if name == "resnet20" else MNIST1D
    network, params, batch_stats = initialised(name, shape)
    variables = network.module.init(KEY, jnp.zeros((1, *shape)), train=False)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, dict(variables["params"])))
    assert jax.tree.all(
        jax.tree.map(np.array_equal, batch_stats, dict(variables.get("batch_stats", {})))
    )
