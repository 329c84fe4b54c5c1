"""Reject config keys that do not apply to the chosen model, optimizer, schedule or dataset.

Every key of the config enters the experiment hash, but a key only has an effect where its
component reads it: ``optimizer.momentum`` under Adam or ``model.hidden`` for a ResNet would be
silently ignored, yet give the run a new hash, so an identical experiment would be stored (and
trained again) under another name, and the user would believe a setting was in effect that was
not. :func:`check_applicable` fails instead, with one line naming the key, its value, why it
does not apply and the fix. A key left at its schema default (or set back to it) is accepted.

This module is part of the config layer: it imports nothing but :mod:`lottery.config`, so the
model families below are spelled out by name rather than read from ``lottery.models``.
"""

from __future__ import annotations

from typing import Any

from lottery.config.errors import ConfigError
from lottery.config.schema import Config

# Models that read ``model.width``, the base width of the convolutional families (conv2/4/6,
# resnet*, vgg*, mnist1d_cnn; mobilenetv2*'s stem channels); ``mlp`` and ``lenet_300_100`` are
# fully connected.
WIDTH_PREFIXES = ("conv", "resnet", "vgg", "mnist1d_cnn", "mobilenet")
# Models with BatchNorm layers (model.batchnorm_init): the ResNets, VGGs and MobileNetV2s.
BATCHNORM_PREFIXES = ("resnet", "vgg", "mobilenet")
# Models built from lottery.kernels.layers (model.kernels): the 2-D conv families.
KERNELS_PREFIXES = ("conv", "resnet", "vgg", "mobilenet")
ADAM_FAMILY = ("adam", "adamw")
# Datasets streamed from the host: normalised by their stream, cropped to dataset.image_size.
STREAMED = ("imagenet2012",)


def check_applicable(cfg: Config, input_shape: tuple[int, ...]) -> None:
    """Raise :class:`ConfigError` for the first key set away from its default that is unused.

    ``input_shape`` is the shape of one input example (no batch axis), e.g. ``(40,)`` for
    MNIST-1D or ``(32, 32, 3)`` for CIFAR-10.
    """
    data, model, opt = cfg.dataset, cfg.model, cfg.optimizer
    on_data = f"dataset.name={data.name!r}"
    if data.name == "digits":
        why = "digits ships with scikit-learn and reads no files"
        _unused(cfg, "dataset.path", on_data, why, "remove it")
    if data.name in STREAMED:
        why = "the stream always normalises with ImageNet's mean and std"
        _unused(cfg, "dataset.normalize", on_data, why, "remove it")
    else:
        why = "only the streamed imagenet2012 crops to it"
        _unused(cfg, "dataset.image_size", on_data, why, "remove it")
    if not data.name.startswith("tfds:"):
        for key in ("dataset.train_split", "dataset.test_split"):
            _unused(cfg, key, on_data, "only tfds:NAME datasets choose their splits", "remove it")
    if data.name != "npz":
        why = "the other datasets know their classes"
        _unused(cfg, "dataset.num_classes", on_data, why, "remove it")
    if len(input_shape) != 3:
        shape = f"{on_data} with inputs of shape {tuple(input_shape)}"
        why = "random crop and flip need images of shape (H, W, C)"
        _unused(cfg, "dataset.augment", shape, why, "set dataset.augment=false")

    on_model = f"model.name={model.name!r}"
    if is_user_model(model.name):
        _check_user_model(cfg, on_model)
    else:
        _check_zoo_model(cfg, on_model)

    on_opt = f"optimizer.name={opt.name!r}"
    if opt.name != "sgd":
        for key in ("optimizer.momentum", "optimizer.nesterov"):
            _unused(cfg, key, on_opt, "only sgd uses it", "remove it or choose optimizer=sgd")
    elif opt.momentum == 0:
        momentum, why = f"optimizer.momentum={opt.momentum!r}", "Nesterov needs momentum > 0"
        _unused(cfg, "optimizer.nesterov", momentum, why, "remove it or set optimizer.momentum=0.9")
    if opt.name not in ADAM_FAMILY:
        for key in ("optimizer.b1", "optimizer.b2", "optimizer.eps"):
            why = "only adam and adamw use it"
            _unused(cfg, key, on_opt, why, "remove it or choose optimizer=adam")
    if opt.schedule != "step":
        on_schedule = f"optimizer.schedule={opt.schedule!r}"
        for key in ("optimizer.milestones", "optimizer.gamma"):
            why = "only the step schedule uses it"
            _unused(cfg, key, on_schedule, why, "remove it or set optimizer.schedule=step")


def is_user_model(name: str) -> bool:
    """Whether ``model.name`` is an import path to a model of one's own
    (``package.module:Name``) rather than a model of the zoo."""
    return ":" in name


# What the zoo's builders read and a model of one's own does not: it builds its own layers.
ZOO_ONLY = ("model.hidden", "model.width", "model.init", "model.kernels")


def _check_user_model(cfg: Config, on_model: str) -> None:
    """A model of one's own takes its settings as ``model.kwargs`` (a compactable method is
    refused by :func:`check_compactable`, which asks the method).
    ``model.bias_init`` and ``model.batchnorm_init`` apply: they redraw leaves by their path
    (a layer's ``bias``, a BatchNorm's ``scale``) after the module's own initialisation."""
    why = "a model of your own builds its own layers"
    for key in ZOO_ONLY:
        _unused(cfg, key, on_model, why, "remove it or pass the model an argument in model.kwargs")


def _check_zoo_model(cfg: Config, on_model: str) -> None:
    model = cfg.model
    why = "only a model of your own (model.name=package.module:Name) takes keyword arguments"
    _unused(cfg, "model.kwargs", on_model, why, "remove it")
    if model.name != "mlp":
        why = "only mlp has configurable hidden layers"
        _unused(cfg, "model.hidden", on_model, why, "remove it or choose model=mlp")
    if not model.name.startswith(WIDTH_PREFIXES):
        why = "only conv2/4/6, resnet*, vgg*, mobilenetv2* and mnist1d_cnn use it"
        _unused(cfg, "model.width", on_model, why, "remove it or choose one of them")
    if not model.name.startswith(BATCHNORM_PREFIXES):
        why = "only the networks with BatchNorm (resnet*, vgg*, mobilenetv2*) have scales to draw"
        _unused(cfg, "model.batchnorm_init", on_model, why, "remove it")
    if not model.name.startswith(KERNELS_PREFIXES):
        why = "only conv2/4/6, resnet*, vgg* and mobilenetv2* have the convolutions it chooses"
        _unused(cfg, "model.kernels", on_model, why, "remove it")


def _unused(cfg: Config, key: str, chosen: str, why: str, fix: str) -> None:
    """Fail if ``key`` ("section.name") differs from its schema default: ``chosen`` ignores it."""
    value, default = _get(cfg, key), _get(Config(), key)
    if value != default:
        raise ConfigError(f"{key}={_show(value)} does not apply to {chosen} ({why}); {fix}")


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _show(value: Any) -> str:
    """A value as it is written on the command line (true/false for booleans)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def check_compactable(cfg: Config, compactable: bool) -> None:
    """A method whose levels are compacted (``Strategy.compactable``) on a model of one's own:
    compaction rebuilds one of the zoo's networks narrower, which a user's module cannot be."""
    if compactable and is_user_model(cfg.model.name):
        raise ConfigError(
            f"pruning.method={cfg.pruning.method!r} does not apply to model.name="
            f"{cfg.model.name!r}: each of its levels is compacted, which rebuilds one of the "
            "zoo's networks narrower, and a module of your own cannot be rebuilt; choose an "
            "unstructured method, e.g. pruning.method=magnitude"
        )
