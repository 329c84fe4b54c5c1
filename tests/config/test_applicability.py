"""Config keys that the chosen model, optimizer, schedule or dataset ignores are rejected."""

from __future__ import annotations

import pytest

from lottery.config.applicability import check_applicable
from lottery.config.errors import ConfigError

from conftest import REPO, make_config

MNIST1D, DIGITS, CIFAR, IMAGENET = (40,), (8, 8, 1), (32, 32, 3), (224, 224, 3)

# (setting, context where it applies or None, its input shape, context that ignores it, shape)
CASES = [
    ("optimizer.momentum=0.9", ["optimizer=sgd"], MNIST1D, [], MNIST1D),
    ("optimizer.momentum=0.9", None, None, ["optimizer.name=adamw"], MNIST1D),
    ("optimizer.nesterov=true", ["optimizer=sgd"], MNIST1D, [], MNIST1D),
    ("optimizer.nesterov=true", None, None, ["optimizer.name=adamw"], MNIST1D),
    ("optimizer.nesterov=true", None, None, ["optimizer=sgd", "optimizer.momentum=0"], MNIST1D),
    ("optimizer.b1=0.8", ["optimizer.name=adamw"], MNIST1D, ["optimizer=sgd"], MNIST1D),
    ("optimizer.b2=0.99", [], MNIST1D, ["optimizer=sgd"], MNIST1D),
    ("optimizer.eps=1e-6", [], MNIST1D, ["optimizer=sgd"], MNIST1D),
    ("optimizer.milestones=[10it]", ["optimizer.schedule=step"], MNIST1D, [], MNIST1D),
    (
        "optimizer.gamma=0.5",
        ["optimizer.schedule=step"],
        MNIST1D,
        ["optimizer.schedule=cosine"],
        MNIST1D,
    ),
    ("model.hidden=[64]", [], MNIST1D, ["model=resnet20"], CIFAR),
    ("model.hidden=[64]", None, None, ["model=lenet_300_100"], MNIST1D),
    ("model.width=32", ["model=resnet20"], CIFAR, [], MNIST1D),
    ("model.width=32", ["model=mnist1d_cnn"], MNIST1D, ["model=lenet_300_100"], MNIST1D),
    ("dataset.augment=true", ["dataset=cifar10"], CIFAR, [], MNIST1D),
    ("dataset.augment=true", ["dataset=digits"], DIGITS, ["dataset=digits"], (64,)),
    ("dataset.image_size=160", ["dataset=imagenet2012"], IMAGENET, ["dataset=cifar10"], CIFAR),
    ("dataset.path=/tmp/data", [], MNIST1D, ["dataset=digits"], DIGITS),
    ("dataset.normalize=false", [], MNIST1D, ["dataset=imagenet2012"], IMAGENET),
]


@pytest.mark.parametrize(("setting", "good", "good_shape", "bad", "bad_shape"), CASES)
def test_key_is_accepted_only_where_it_applies(
    setting: str,
    good: list[str] | None,
    good_shape: tuple[int, ...] | None,
    bad: list[str],
    bad_shape: tuple[int, ...],
) -> None:
    key = setting.split("=")[0]
    with pytest.raises(ConfigError) as error:
        check_applicable(make_config([*bad, setting]), bad_shape)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{key}=") and "does not apply" in message
    if good is not None:
        check_applicable(make_config([*good, setting]), good_shape)


# Shape of one input example of each dataset the presets use.
SHAPES = {
    "mnist1d": MNIST1D,
    "mnist": (28, 28, 1),
    "fashion_mnist_idx": (28, 28, 1),
    "cifar10": CIFAR,
    "imagenet2012": IMAGENET,
}
PRESETS = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_default_and_presets_pass_but_reject_a_foreign_key(preset: str | None) -> None:
    overrides = [] if preset is None else [f"+experiment={preset}"]
    cfg = make_config(overrides)
    shape = SHAPES[cfg.dataset.name]
    check_applicable(cfg, shape)
    # The check is live on the preset: a key its optimizer ignores is refused.
    foreign = "optimizer.b1=0.5" if cfg.optimizer.name == "sgd" else "optimizer.momentum=0.5"
    with pytest.raises(ConfigError, match=foreign.split("=")[0]):
        check_applicable(make_config([*overrides, foreign]), shape)
