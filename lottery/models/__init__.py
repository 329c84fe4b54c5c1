"""Flax Linen networks by name. Models know nothing about masks.

- ``mlp``, ``lenet_300_100``: fully connected networks (:mod:`lottery.models.mlp`).
- ``conv2``, ``conv4``, ``conv6``: Frankle & Carbin's CIFAR-10 convnets (:mod:`.conv`).
- ``resnet20/32/56/110``: CIFAR ResNets, as OpenLTH's ``cifar_resnet_N`` (:mod:`.resnet_cifar`).
- ``vgg11/13/16/19``: CIFAR VGGs with BatchNorm, as OpenLTH's ``cifar_vgg_N`` (:mod:`.vgg`).
- ``resnet18/34/50``: ImageNet ResNets, as torchvision's (:mod:`.resnet_imagenet`).
- ``mnist1d_cnn``: the MNIST-1D convolutional baseline (:mod:`.cnn1d`).
- ``mobilenetv2``, ``mobilenetv2_cifar``: MobileNetV2 for ImageNet, as torchvision's, and its
  CIFAR variant (:mod:`.mobilenet`); ``model.width`` is the stem's channels before rounding
  (32 = width multiplier 1.0, 16 = 0.5).

``model.name=package.module:Name`` (``model.kwargs={...}``): a model of your own, a Flax
Linen module class or factory (:mod:`lottery.models.user`).

``model.width`` sets the base width of the convolutional families (0 = the paper's).
``model.kernels`` picks the training kernels of convolutions, BatchNorm and max-pools,
given to the convolutional families' modules as their ``kernels`` field when they are built
(:mod:`lottery.kernels.layers`).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
from flax import traverse_util

from lottery.config import ConfigError, ModelConfig
from lottery.kernels.layers import Kernels
from lottery.models import conv, mobilenet, resnet_cifar, resnet_imagenet, vgg
from lottery.models.cnn1d import CNN1D
from lottery.models.init import kernel_init, reinit_function
from lottery.models.mlp import MLP
from lottery.models.network import BatchStats, Network, Params
from lottery.models.user import build_module, check_network, is_user_model, resolve

# builder(cfg, num_classes, kernels): the convolutional families build their layers on
# ``kernels``; the fully connected networks and the 1-D CNN have no layers it changes.
Builder = Callable[[ModelConfig, int, Kernels], nn.Module]


def _conv(depth: int) -> Builder:
    plan = conv.PLANS[depth]
    return lambda cfg, n, kernels: conv.ConvNet(
        plan, n, cfg.width or 64, kernel_init=kernel_init(cfg.init), kernels=kernels
    )


def _cifar_resnet(depth: int) -> Builder:
    return lambda cfg, n, kernels: resnet_cifar.CifarResNet(
        depth, n, cfg.width or 16, kernel_init(cfg.init), kernels=kernels
    )


def _vgg(depth: int) -> Builder:
    return lambda cfg, n, kernels: vgg.VGG(
        vgg.PLANS[depth], n, cfg.width or 64, kernel_init(cfg.init), kernels=kernels
    )


def _imagenet_resnet(depth: int) -> Builder:
    stages, bottleneck = resnet_imagenet.PLANS[depth]
    return lambda cfg, n, kernels: resnet_imagenet.ImageNetResNet(
        stages, bottleneck, n, cfg.width or 64, kernel_init(cfg.init), kernels=kernels
    )


def _mobilenet(data: str) -> Builder:
    plan = mobilenet.CIFAR_PLAN if data == "cifar" else mobilenet.IMAGENET_PLAN
    stride = mobilenet.STEM_STRIDE[data]
    return lambda cfg, n, kernels: mobilenet.MobileNetV2(
        n, plan, stride, (cfg.width or mobilenet.STEM_CHANNELS) / mobilenet.STEM_CHANNELS,
        kernel_init(cfg.init), kernels=kernels,
    )


# name -> builder(cfg, num_classes, kernels)
MODELS: dict[str, Builder] = {
    "mlp": lambda cfg, n, _: MLP(tuple(cfg.hidden), n, kernel_init(cfg.init)),
    "lenet_300_100": lambda cfg, n, _: MLP((300, 100), n, kernel_init(cfg.init)),
    **{f"conv{d}": _conv(d) for d in (2, 4, 6)},
    **{f"resnet{d}": _cifar_resnet(d) for d in (20, 32, 56, 110)},
    **{f"vgg{d}": _vgg(d) for d in (11, 13, 16, 19)},
    **{f"resnet{d}": _imagenet_resnet(d) for d in (18, 34, 50)},
    "mnist1d_cnn": lambda cfg, n, _: CNN1D(n, cfg.width or 25, kernel_init=kernel_init(cfg.init)),
    "mobilenetv2": _mobilenet("imagenet"),
    "mobilenetv2_cifar": _mobilenet("cifar"),
}


KERNELS = ("auto", "xla", "cpu")


def check_name(name: str) -> None:
    """Fail with one line if ``name`` is not a known model nor an importable model of one's
    own (``package.module:Name``)."""
    if is_user_model(name):
        resolve(name)
    elif name not in MODELS:
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}, or give a "
            "model of your own as model.name=package.module:Name"
        )


def check_kernels(kernels: str) -> None:
    """Fail with one line if ``kernels`` is not a known choice of ``model.kernels``."""
    if kernels not in KERNELS:
        choices = ", ".join(KERNELS)
        raise ConfigError(f"unknown model.kernels={kernels!r}; choose one of {choices}")


# Where ``model.kernels=auto`` trains with the CPU kernels (:mod:`lottery.kernels.layers`):
# the platforms they were measured faster on. Written for the CPU, they also beat Flax's
# layers on a GPU (``benchmarks/conv_gpu.py``, H200, masked steps/s: ResNet-20 443 against
# 421-426, VGG-16 425 against 385, Conv-2/4/6 14-15% faster; ResNet-20 426 against 405 on an
# H100). TPUs are unmeasured and keep Flax's layers.
AUTO_CPU_KERNELS = ("cpu", "gpu")


def uses_cpu_kernels(kernels: str, platform: str | None = None) -> bool:
    """Whether ``model.kernels`` means the CPU kernels (:mod:`lottery.kernels.layers`) on
    ``platform`` (default: JAX's default backend)."""
    check_kernels(kernels)
    if kernels == "auto":
        return (platform or jax.default_backend()) in AUTO_CPU_KERNELS
    return kernels == "cpu"


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Network:
    """The network ``cfg`` names, for inputs of ``input_shape`` (without the batch axis)."""
    check_name(cfg.name)
    reinit = reinit_function(cfg.batchnorm_init, cfg.bias_init)
    if is_user_model(cfg.name):  # its own layers: no kernel initialiser, no CPU kernels
        module = build_module(cfg.name, dict(cfg.kwargs), num_classes)
        return Network(module, tuple(input_shape), reinit)
    kernel_init(cfg.init)  # fail early on an unknown initialiser
    kernels: Kernels = "cpu" if uses_cpu_kernels(cfg.kernels) else "xla"
    module = MODELS[cfg.name](cfg, num_classes, kernels)
    return Network(module, tuple(input_shape), reinit)


def check_built(
    cfg: ModelConfig, network: Network, params: Params, batch_stats: BatchStats, num_classes: int
) -> None:
    """One line if a model of one's own does not map the data to ``(batch, num_classes)``
    logits, or keeps variables the experiment cannot carry (the zoo's are known to)."""
    if not is_user_model(cfg.name):
        return
    check_network(network, params, batch_stats, num_classes, cfg.name)
    leaves = set(traverse_util.flatten_dict(params, sep="/"))
    on_model = f"does not apply to model.name={cfg.name!r}"
    if cfg.batchnorm_init != "ones" and not any(p.endswith("/scale") for p in leaves):
        raise ConfigError(
            f"model.batchnorm_init={cfg.batchnorm_init!r} {on_model} (it has no BatchNorm "
            "scale to draw); remove it"
        )
    biased = [p for p in leaves if p.endswith("/bias") and p[: -len("bias")] + "kernel" in leaves]
    if cfg.bias_init != "zeros" and not biased:
        raise ConfigError(
            f"model.bias_init={cfg.bias_init!r} {on_model} (no layer has a kernel and a bias "
            "to draw); remove it"
        )


__all__ = [
    "MODELS",
    "BatchStats",
    "Network",
    "Params",
    "build",
    "check_built",
    "check_kernels",
    "check_name",
    "is_user_model",
    "uses_cpu_kernels",
]
