"""A model of one's own (``model.name=package.module:Name``), written to a folder outside the
package and run from there through the real command line: IMP with both controls, BatchNorm
statistics, a factory with keyword arguments, ``lottery.load``; and each way a user's model
can be wrong, as one line before anything is trained."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lottery.config import ConfigError

from conftest import make_config, run_cli

# One worker for the module: its trained store (own_run) is made once.
# Runs the command line with models of one's own: the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own_model")]

# A convolution, a BatchNorm (its statistics follow ``train``) and two Dense layers; and a
# factory whose module takes no ``train`` argument.
OWN_MODEL = textwrap.dedent(
    """
    import flax.linen as nn


    class Net(nn.Module):
        num_classes: int
        width: int = 32

        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Conv(4, (3, 3))(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
            x = x.reshape((x.shape[0], -1))
            x = nn.relu(nn.Dense(self.width)(x))
            return nn.Dense(self.num_classes)(x)


    class Plain(nn.Module):
        num_classes: int
        width: int

        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
            return nn.Dense(self.num_classes)(x)


    def make_net(num_classes, width=32):
        return Plain(num_classes, width)
    """
)

# Modules that are wrong, one way each (the data: digits, 8x8x1 images of 10 classes).
BAD_MODELS = textwrap.dedent(
    """
    import flax.linen as nn
    import jax.numpy as jnp

    CONSTANT = 3


    class ThreeClasses(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))


    class Wide(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, train: bool):
            return nn.Dense(self.num_classes)(x.reshape((x.shape[0], 7, -1)))


    class Counter(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, train: bool):
            calls = self.variable("counter", "calls", lambda: jnp.zeros((), jnp.int32))
            calls.value += 1
            return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


    class Dropping(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Dropout(0.5, deterministic=not train)(x.reshape((x.shape[0], -1)))
            return nn.Dense(self.num_classes)(x)


    instance = ThreeClasses()


    def not_a_module(num_classes):
        return {"layers": num_classes}
    """
)

QUICK = ["dataset=digits", "train.batch_size=50", "train.eval_every=50it", "progress=false"]
BASE = [*QUICK, "train.steps=100it", "pruning.levels=1"]


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of ``mymodel.py``, where IMP with both controls ran on ``mymodel:Net``."""
    folder = tmp_path_factory.mktemp("own_model")
    (folder / "mymodel.py").write_text(OWN_MODEL)
    done = run_cli(
        [*BASE, "model.name=mymodel:Net", "++model.kwargs={width:16}",
         "branches=[random_reinit,random_prune]", "results_root=results"],
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    return folder


def _experiment(folder: Path) -> Path:
    (curve,) = (folder / "results").glob("*/*/curve.csv")
    return curve.parent


def test_own_model_runs_imp_with_both_controls(own_run: Path) -> None:
    experiment = _experiment(own_run)
    with open(experiment / "curve.csv") as file:
        rows = list(csv.DictReader(file))
    series = {(row["branch"], int(row["level"])) for row in rows}
    assert {("imp", 0), ("imp", 1), ("random_reinit", 1), ("random_prune", 1)} <= series
    hashed = json.loads((experiment / "hashed.json").read_text())
    assert hashed["model.name"] == "mymodel:Net"
    assert hashed["model.kwargs.width"] == 16
    assert not list(own_run.rglob("__pycache__"))  # the import wrote nothing beside it


def test_own_model_prunes_its_dense_and_conv_kernels(own_run: Path) -> None:
    level = _experiment(own_run) / "replicate_0" / "level_1"
    with np.load(level / "mask.npz") as stored:
        mask = {key: stored[key] for key in stored.files}
    pruned = sorted(key for key, leaf in mask.items() if not leaf.all())
    assert pruned == [
        "mask/Conv_0/kernel", "mask/Dense_0/kernel", "mask/Dense_1/kernel"
    ], sorted(mask)
    kernels = [mask[key] for key in pruned]
    total = sum(leaf.size for leaf in kernels)
    assert sum(int((~leaf).sum()) for leaf in kernels) == round(0.2 * total)


def test_lottery_load_imports_the_own_model_again(
    own_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lottery

    monkeypatch.chdir(own_run)
    monkeypatch.delitem(sys.modules, "mymodel", raising=False)
    path_before = list(sys.path)
    ticket = lottery.load(_experiment(own_run) / "replicate_0" / "level_1")
    sys.modules.pop("mymodel", None)
    assert sys.path == path_before
    assert type(ticket.network.module).__name__ == "Net"
    assert ticket.network.module.width == 16
    assert set(ticket.batch_stats) == {"BatchNorm_0"}
    assert np.abs(np.asarray(ticket.batch_stats["BatchNorm_0"]["mean"])).sum() > 0  # trained
    logits = ticket.predict(np.zeros((3, 8, 8, 1), np.float32))
    assert logits.shape == (3, 10)


def test_lottery_load_elsewhere_names_the_module_it_cannot_import(
    own_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lottery

    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mymodel", raising=False)
    with pytest.raises(ConfigError, match="module 'mymodel' does not import"):
        lottery.load(_experiment(own_run) / "replicate_0" / "level_1")


def test_own_model_run_again_trains_only_the_new_level(own_run: Path) -> None:
    done = run_cli(
        [*BASE, "model.name=mymodel:Net", "++model.kwargs={width:16}", "pruning.levels=2",
         "branches=[random_reinit,random_prune]", "results_root=results"],
        cwd=own_run,
    )
    assert done.returncode == 0, done.stderr
    trained = [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("level")]
    assert trained == ["level  2", "level  2 random_reinit", "level  2 random_prune"], trained


def test_own_factory_with_kwargs_and_no_train_argument(tmp_path: Path) -> None:
    (tmp_path / "mymodel.py").write_text(OWN_MODEL)
    done = run_cli(
        [*BASE, "model.name=mymodel:make_net", "++model.kwargs={width:8}", "branches=[]",
         "results_root=results"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    level = _experiment(tmp_path) / "replicate_0" / "level_1"
    with np.load(level / "params.npz") as stored:
        shapes = {key: stored[key].shape for key in stored.files}
    assert shapes["params/Dense_0/kernel"] == (64, 8)
    assert shapes["params/Dense_1/kernel"] == (8, 10)


BAD = [
    ("model.name=nosuchmodule:Net", "module 'nosuchmodule' does not import (No module named"),
    ("model.name=broken:Net", "module 'broken' does not import (No module named 'notapackage')"),
    ("model.name=syntax:Net", "importing 'syntax' raised SyntaxError"),
    ("model.name=badmodels:Nett", "has no attribute 'Nett' (it has Counter, Dropping"),
    ("model.name=badmodels", "unknown model 'badmodels'"),
    ("model.name=badmodels:", "is not an import path; write model.name=package.module:Name"),
    ("model.name=badmodels:CONSTANT", "is not a Flax Linen module class or a factory"),
    ("model.name=badmodels:instance", "is a module instance; give its class or a factory"),
    ("model.name=badmodels:not_a_module", "the factory returned a dict, not a flax.linen.Module"),
    ("model.name=badmodels:ThreeClasses", "returns logits of shape (2, 3)"),
    ("model.name=badmodels:Wide", "cannot take the examples of dataset.name='digits'"),
    ("model.name=badmodels:Counter", "has variable collections counter"),
    ("model.name=badmodels:Dropping", "fails on a batch of shape (2, 8, 8, 1) with train=True"),
]
KEYS = [
    (["++model.kwargs={depth:3}"], "Net(**model.kwargs) with model.kwargs={'depth': 3} raised"),
    (["++model.kwargs={num_classes:3}"], "model.kwargs.num_classes=3: the number of classes"),
    (["model.hidden=[64]"], "model.hidden=[64] does not apply to model.name='mymodel:Net'"),
    (["model.init=glorot_normal"], "model.init='glorot_normal' does not apply"),
    (["model.width=8"], "model.width=8 does not apply"),
    (["model.kernels=xla"], "model.kernels='xla' does not apply"),
    (["pruning.method=structured"], "pruning.method='structured' does not apply"),
]


@pytest.fixture
def bad_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder, holding the good model, the bad ones, and two that do not import."""
    (tmp_path / "mymodel.py").write_text(OWN_MODEL)
    (tmp_path / "badmodels.py").write_text(BAD_MODELS)
    (tmp_path / "broken.py").write_text("import notapackage\n")
    (tmp_path / "syntax.py").write_text("def (:\n")
    monkeypatch.chdir(tmp_path)
    for name in ("mymodel", "badmodels"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def _prepare_fails(overrides: list[str], folder: Path) -> str:
    from lottery.experiment import prepare

    with pytest.raises(ConfigError) as error:
        prepare(make_config([*QUICK, "train.steps=100it", *overrides], folder / "results"))
    message = str(error.value)
    assert "\n" not in message
    assert not (folder / "results").exists()
    return message


@pytest.mark.parametrize(("name", "expected"), BAD, ids=[name for name, _ in BAD])
def test_bad_own_model_is_one_line(bad_folder: Path, name: str, expected: str) -> None:
    assert expected in _prepare_fails([name], bad_folder)


@pytest.mark.parametrize(("overrides", "expected"), KEYS, ids=[o[0] for o, _ in KEYS])
def test_keys_an_own_model_does_not_read_are_rejected(
    bad_folder: Path, overrides: list[str], expected: str
) -> None:
    assert expected in _prepare_fails(["model.name=mymodel:Net", *overrides], bad_folder)


def test_zoo_model_rejects_kwargs(bad_folder: Path) -> None:
    message = _prepare_fails(["model.name=mlp", "++model.kwargs={width:3}"], bad_folder)
    assert "model.kwargs={'width': 3} does not apply to model.name='mlp'" in message


def test_batchnorm_init_on_an_own_model_without_batchnorm(bad_folder: Path) -> None:
    message = _prepare_fails(
        ["model.name=mymodel:make_net", "model.batchnorm_init=uniform"], bad_folder
    )
    assert "model.batchnorm_init='uniform' does not apply" in message


def test_kwargs_hash_by_value_not_by_order() -> None:
    from lottery.store.hashing import experiment_hash, hashed_values

    def hashed(*overrides: str) -> str:
        return experiment_hash(make_config(["model.name=mymodel:Net", *overrides]))

    assert hashed("++model.kwargs={a:1,b:[2,3]}") == hashed("++model.kwargs={b:[2,3],a:1}")
    assert len({hashed("++model.kwargs={a:1}"), hashed("++model.kwargs={a:2}"), hashed()}) == 3
    assert not any(key.startswith("model.kwargs") for key in hashed_values(make_config([])))
