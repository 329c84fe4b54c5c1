"""From a trained model to a shippable one: ``init.checkpoint``, the accuracy budget
(``pruning.max_accuracy_drop``), int8 quantization, sparse inference and the exported model."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from safetensors.numpy import save_file

from lottery import experiment, load
from lottery.config import ConfigError
from lottery.deploy.quantize import quantize, zeros_kept
from lottery.deploy.sparse_inference import sparse_forward
from lottery.experiment.pretrained import load_pretrained
from lottery.pruning import flatten

from conftest import DIGITS, make_config

# One worker for the module: its trained fixtures are made once.
# Trains and measures experiments end to end: the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("deployment")]

FROM_SOURCE = ["init.train_level_0=false"]


@pytest.fixture(scope="session")
def source(tmp_path_factory) -> Path:
    """Level 0 of a trained digits MLP: the model the other runs start from."""
    root = tmp_path_factory.mktemp("source")
    experiment.run(make_config([*DIGITS, "pruning.levels=0"], root))
    return next(root.rglob("replicate_0/level_0"))


def budget_overrides(source: Path) -> list[str]:
    """The prune_finetune preset (level 0 as loaded, fine-tuning from the previous level, int8,
    measured and exported: jax.export and ONNX), small, on the digits model, to a budget of
    5 points."""
    return [
        "+experiment=prune_finetune", "dataset=digits", "model.hidden=[64,32]",
        "train.batch_size=50", "train.eval_every=50it", "train.steps=100it", "progress=false",
        f"init.checkpoint={source}", "pruning.max_accuracy_drop=5", "pruning.fraction=0.6",
        "pruning.levels=5", "deploy.export=all",
    ]


@pytest.fixture(scope="session")
def budget_printed(source, tmp_path_factory) -> tuple[Path, str]:
    """The preset's run (it keeps a pruned level and stops after a later one on this data):
    its replicate folder and what it printed."""
    root = tmp_path_factory.mktemp("budget")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        experiment.run(make_config(budget_overrides(source), root))
    return next(root.rglob("replicate_0/budget.json")).parent, printed.getvalue()


@pytest.fixture(scope="session")
def budget_run(budget_printed) -> Path:
    return budget_printed[0]


def test_a_loaded_level_reproduces_the_source_exactly(source, tmp_path):
    cfg = make_config([*DIGITS, *FROM_SOURCE, "pruning.levels=0", f"init.checkpoint={source}"],
                      tmp_path)
    experiment.run(cfg)
    level_0 = next(tmp_path.rglob("replicate_0/level_0"))
    loaded = json.loads((level_0 / "summary.json").read_text())
    original = json.loads((source / "summary.json").read_text())
    assert loaded["test_accuracy"] == original["test_accuracy"]
    assert loaded["test_loss"] == original["test_loss"]
    assert loaded["train_iterations"] == 0  # evaluated, not trained
    for key, value in np.load(source / "params.npz").items():
        np.testing.assert_array_equal(np.load(level_0 / "params.npz")[key], value)


def test_every_kind_of_checkpoint_gives_the_same_weights(source, tmp_path):
    reference = load(source)
    params = jax.device_get(reference.params)
    fresh = jax.tree.map(np.zeros_like, params)
    _, _, digest = load_pretrained(str(source), fresh, {})
    flat = flatten(params)
    np.savez(tmp_path / "weights.npz", **flat)
    save_file({k: np.ascontiguousarray(v) for k, v in flat.items()},
              str(tmp_path / "weights.safetensors"))
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save((tmp_path / "orbax").absolute(), {"params": params})
    for path in ("weights.npz", "weights.safetensors", "orbax"):
        loaded, _, other = load_pretrained(str(tmp_path / path), fresh, {})
        assert other == digest, path  # the same weights: the same experiment hash
        for key, value in flatten(loaded).items():
            np.testing.assert_array_equal(value, flat[key], err_msg=path)


def test_a_checkpoint_of_another_shape_names_the_path_and_both_shapes(source):
    reference = load(source)
    params = jax.device_get(reference.params)
    params["fc2"]["kernel"] = np.zeros((64, 16), np.float32)
    with pytest.raises(ConfigError) as error:
        load_pretrained(str(source), params, {})
    assert str(error.value) == (
        f"init.checkpoint={str(source)!r}: params 'fc2/kernel' has shape (64, 32) where the "
        "model has (64, 16); choose the model (and widths) it was trained with"
    )


def test_the_hash_follows_the_weights_not_their_path(source, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    digests = [
        experiment.prepare(make_config([*DIGITS, f"init.checkpoint={path}"], tmp_path)).digest
        for path in (source, copy)
    ]
    assert digests[0] == digests[1]
    plain = experiment.prepare(make_config(DIGITS, tmp_path)).digest
    assert plain != digests[0]


def test_the_budget_stops_at_the_first_level_past_it_and_keeps_the_one_before(
    budget_run, source
):
    verdict = json.loads((budget_run / "budget.json").read_text())
    summaries = {
        int(path.parent.name.removeprefix("level_")): json.loads(path.read_text())
        for path in budget_run.glob("level_*/summary.json")
    }
    over = verdict["first_level_over_budget"]
    assert over is not None and over >= 2, "the budget should keep a pruned level here"
    assert verdict["chosen_level"] == over - 1
    assert sorted(summaries) == list(range(over + 1))  # nothing trained after the first miss
    drop = {level: 100 * (summaries[0]["val_accuracy"] - s["val_accuracy"])
            for level, s in summaries.items()}
    assert all(drop[level] <= 5 + 1e-9 for level in range(over))
    assert drop[over] > 5
    assert verdict["chosen_test_accuracy"] == summaries[over - 1]["test_accuracy"]
    # The same command again trains nothing and comes to the same verdict.
    root = budget_run.parent.parent.parent
    before = sorted(p.name for p in budget_run.iterdir())
    experiment.run(make_config(budget_overrides(source), root))
    assert sorted(p.name for p in budget_run.iterdir()) == before
    assert json.loads((budget_run / "budget.json").read_text()) == verdict


def test_every_level_reports_its_deployment_figures(budget_run):
    for level_folder in sorted(budget_run.glob("level_*")):
        figures = json.loads((level_folder / "deployment.json").read_text())
        summary = json.loads((level_folder / "summary.json").read_text())
        assert figures["int8"]["pruned_weights_zero"] is True
        assert abs(figures["int8"]["test_accuracy"] - summary["test_accuracy"]) < 0.05
        assert figures["bytes"]["sparse_int8"] < figures["bytes"]["sparse"]
        assert set(figures["latency"]["dense"]) == {"batch_1_ms", "batch_256_ms"}
        # onnxruntime: dense, the level's masked network (magnitude: no compaction), int8.
        onnx = figures["onnxruntime_latency"]
        assert set(onnx) == {"dense", "masked", "int8"}
        for latency in onnx.values():
            assert set(latency) == {f"batch_{b}_ms{t}" for b in (1, 256) for t in ("", "_1_thread")}
            assert all(0 < ms < 1e3 for ms in latency.values())
        if summary["level"] > 0:
            assert figures["bytes"]["sparse"] < figures["bytes"]["dense_float"]
            assert "sparse_bcoo" in figures["latency"]


def install_closure(names: list[str]) -> set[str]:
    """The distributions ``pip install <names>`` installs: ``names`` and, recursively, the
    requirements they declare without extras, by this environment's metadata."""
    wanted, seen = list(names), set()
    while wanted:
        name = canonicalize_name(wanted.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return seen


def venv_with_only(distributions: set[str], root: Path) -> Path:
    """A fresh venv (no system site-packages, no pip) that sees only ``distributions`` of this
    environment: a ``.pth`` entry names a folder of links to their files' top-level entries
    (packages, vendored ``.libs``, ``.dist-info``), as installing them would lay them out.
    Its python."""
    venv, linked = root / "venv", root / "linked"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True,
                   timeout=120)
    linked.mkdir()
    for name in distributions:
        dist = metadata.distribution(name)
        for top in {Path(str(file)).parts[0] for file in dist.files or ()} - {".."}:
            if not (linked / top).exists():
                (linked / top).symlink_to(Path(dist.locate_file(top)))
    [site_packages] = (venv / "lib").glob("python*/site-packages")
    (site_packages / "only.pth").write_text(f"{linked}\n")
    return venv / "bin" / "python"


LOAD_AND_CALL = (
    "import sys, numpy as np, jax\n"
    "call = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read())).call\n"
    "np.save(sys.argv[3], np.asarray(call(np.load(sys.argv[2]))))\n"
)


def run_alone(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -c LOAD_AND_CALL args``, in an environment that points at nothing else."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONNOUSERSITE": "1",
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([str(python), "-c", LOAD_AND_CALL, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_exported_model_runs_with_only_jax_jaxlib_and_flatbuffers(budget_run, tmp_path):
    """What docs/guides/deployment.md promises: ``pip install jax flatbuffers`` runs the
    artifact (int8 and all), without this package, Flax or Qwix; jax alone does not (JAX's
    deserializer imports flatbuffers, which jax does not require)."""
    verdict = json.loads((budget_run / "budget.json").read_text())
    folder = budget_run / f"level_{verdict['chosen_level']}"
    ticket = load(folder)
    x = np.random.default_rng(0).normal(size=(5, *ticket.summary["input_shape"]))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    args = [str(folder / "model.jax_export"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]

    jax_only = install_closure(["jax"])
    assert {"jax", "jaxlib", "numpy"} <= jax_only and not {"flax", "qwix"} & jax_only
    assert "flatbuffers" not in jax_only
    python = venv_with_only(jax_only, tmp_path / "jax")
    for other in ("lottery", "flax", "qwix"):  # the venv sees nothing else of this one
        seen = subprocess.run([str(python), "-c", f"import {other}"], cwd=tmp_path,
                              capture_output=True, env={"PYTHONNOUSERSITE": "1"}, timeout=60)
        assert seen.returncode != 0, other
    without = run_alone(python, args, tmp_path)
    assert without.returncode != 0 and "Please install 'flatbuffers'" in without.stderr, (
        without.stderr[-2000:])

    python = venv_with_only(install_closure(["jax", "flatbuffers"]), tmp_path / "jax_flatbuffers")
    out = run_alone(python, args, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = quantize(ticket.network, ticket.params, ticket.batch_stats).forward(x)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_the_onnx_export_runs_in_onnxruntime_with_the_int8_logits(budget_run):
    """deploy.export=all writes model.onnx beside model.jax_export: onnxruntime gives the int8
    network's logits, and the pruned weights are 0 among its int8 initializers."""
    import onnx
    from onnx import numpy_helper

    from lottery.deploy.onnx_export import onnx_session

    verdict = json.loads((budget_run / "budget.json").read_text())
    folder = budget_run / f"level_{verdict['chosen_level']}"
    ticket = load(folder)
    x = np.random.default_rng(0).normal(size=(5, *ticket.summary["input_shape"]))
    session = onnx_session(folder / "model.onnx")
    [name] = [i.name for i in session.get_inputs()]
    [logits] = session.run(None, {name: x.astype(np.float32)})
    expected = quantize(ticket.network, ticket.params, ticket.batch_stats).forward(x)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    model = onnx.load(folder / "model.onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kernel = next(v for k, v in weights.items() if k.startswith("fc1/kernel"))
    assert kernel.dtype == np.int8
    pruned = ~np.asarray(ticket.mask["fc1"]["kernel"])
    assert np.all(kernel.T[pruned] == 0) if kernel.shape != pruned.shape else np.all(
        kernel[pruned] == 0)


def pruned_level(budget_run: Path) -> Path:
    """The budget run's last (most pruned) level."""
    verdict = json.loads((budget_run / "budget.json").read_text())
    return budget_run / f"level_{verdict['first_level_over_budget']}"


def test_int8_keeps_pruned_weights_zero_and_the_check_sees_one_that_is_not(budget_run):
    ticket = load(pruned_level(budget_run))
    quantized = quantize(ticket.network, ticket.params, ticket.batch_stats)
    assert zeros_kept(quantized, ticket.mask)
    kernel = quantized.int8["fc1/kernel"] = quantized.int8["fc1/kernel"].copy()
    pruned = np.argwhere(~np.asarray(ticket.mask["fc1"]["kernel"]))[0]
    kernel[tuple(pruned)] = 1
    assert not zeros_kept(quantized, ticket.mask)


def test_sparse_products_give_the_masked_network_logits(budget_run):
    ticket = load(pruned_level(budget_run))
    x = np.random.default_rng(1).normal(size=(7, *ticket.summary["input_shape"]))
    dense = ticket.predict(x)
    sparse = sparse_forward(ticket.network, ticket.params, ticket.batch_stats, ticket.mask)(x)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)


def test_the_prune_finetune_preset_prints_the_deployment_table(budget_printed):
    folder, printed = budget_printed
    verdict = json.loads((folder / "budget.json").read_text())
    assert "deployment of prune_finetune" in printed
    assert f"budget: level {verdict['chosen_level']} " in printed
    assert f"exported level {verdict['chosen_level']}: " in printed
    table = printed.split("deployment of prune_finetune", 1)[1]
    table, onnx = table.split("onnxruntime latency", 1)
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == verdict["first_level_over_budget"] + 1  # one row per level
    rows = [line for line in onnx.splitlines() if line.startswith("│")]
    assert len(rows) == verdict["first_level_over_budget"] + 1


def test_int8_activations_too_keep_the_accuracy_close(budget_run):
    ticket = load(pruned_level(budget_run))
    x = np.random.default_rng(2).normal(size=(64, *ticket.summary["input_shape"]))
    plain = np.asarray(ticket.predict(x))
    weights_only = quantize(ticket.network, ticket.params, ticket.batch_stats).forward(x)
    dynamic = quantize(ticket.network, ticket.params, ticket.batch_stats, "int8_dynamic")
    both = np.asarray(dynamic.forward(x))
    assert not np.array_equal(both, np.asarray(weights_only))  # activations quantized too
    agree = np.mean(np.argmax(both, -1) == np.argmax(plain, -1))
    assert agree > 0.9 and zeros_kept(dynamic, ticket.mask)
