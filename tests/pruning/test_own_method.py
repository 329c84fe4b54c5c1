"""A pruning method of one's own (``pruning.method=package.module:NAME``, or an entry point of the
group ``lottery.methods``), written to a folder outside the package as the "Your own pruning
method" recipe of docs/guides/extending.md says, and run through the real command line on digits
with both controls; and a method whose mask has the wrong shape or count, as one line."""

from __future__ import annotations

import csv
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lottery.config import ConfigError

from conftest import DIGITS, make_config, run_cli
from readme import doc_block

# One worker for the module: its folder (and the dense training its runs share) is made once.
# Runs the command line with methods of one's own: the whole suite only.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own_method")]


# Methods that are wrong, one way each: a kernel's mask flattened, one weight too many pruned.
BAD_METHODS = textwrap.dedent(
    """
    import numpy as np

    from lottery.pruning import Strategy, flatten, unflatten
    from mymethod import prune, settings, weight_groups


    def flattened(inputs, fraction):
        flat = flatten(prune(inputs, fraction))
        path = next(p for p in sorted(flat) if p.endswith("kernel"))
        flat[path] = np.asarray(flat[path]).reshape(-1)
        return unflatten(flat)


    def one_too_many(inputs, fraction):
        flat = {p: np.array(m) for p, m in flatten(prune(inputs, fraction)).items()}
        path = inputs.prunable[0]
        flat[path].reshape(-1)[np.flatnonzero(flat[path])[0]] = False
        return unflatten(flat)


    def flattened_update(fraction, prunable, start, end):
        # A mask update inside the training (at its 10th step) that flattens a kernel.

        def update(inputs):
            flat = {p: np.asarray(m) for p, m in flatten(inputs.mask).items()}
            flat[prunable[0]] = flat[prunable[0]].reshape(-1)
            return unflatten(flat)

        return [start + 10], update


    def own_settings(cfg, timeline):
        return cfg.own.get("share", 0.2)  # a setting pruning has no key for


    KEYS = frozenset({"fraction"})
    SHAPE = Strategy("shape", KEYS, settings, flattened, weight_groups=weight_groups)
    COUNT = Strategy("count", KEYS, settings, one_too_many, weight_groups=weight_groups)
    UNKNOWN_KEY = Strategy("unknown", frozenset({"sharpness"}), settings, prune)
    BAD_UPDATE = Strategy(
        "bad_update", KEYS, settings, lambda inputs, fraction: inputs.mask,
        during_training=True, training_updates=flattened_update,
    )
    OWN_KEY = Strategy(
        "own_key", frozenset(), own_settings, prune, weight_groups=weight_groups,
        own_keys=frozenset({"share"}),
    )
    """
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the package holding the recipe's ``mymethod.py`` (and bad ones)."""
    path = tmp_path_factory.mktemp("own_method")
    (path / "mymethod.py").write_text(doc_block("Your own pruning method"))
    (path / "badmethods.py").write_text(BAD_METHODS)
    return path


@pytest.fixture(scope="module")
def own_run(folder: Path) -> Path:
    """IMP with both controls by ``mymethod:STRATEGY``; its experiment folder."""
    done = run_cli(
        [*DIGITS, "pruning.method=mymethod:STRATEGY", "branches=[random_reinit,random_prune]",
         "results_root=results"],
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    (curve,) = (folder / "results").glob("*/*/curve.csv")
    return curve.parent


def _npz(file: Path) -> dict[str, np.ndarray]:
    with np.load(file) as stored:
        return {key: stored[key] for key in stored.files}


def test_own_method_runs_imp_with_both_controls(own_run: Path, folder: Path) -> None:
    with open(own_run / "curve.csv") as file:
        series = {(row["branch"], int(row["level"])) for row in csv.DictReader(file)}
    assert {("imp", 2), ("random_reinit", 2), ("random_prune", 2)} <= series, series
    hashed = json.loads((own_run / "hashed.json").read_text())
    assert hashed["pruning.method"] == "mymethod:STRATEGY"
    assert not list(folder.rglob("__pycache__"))  # the import wrote nothing beside it


def test_own_method_prunes_the_largest_weights_first(own_run: Path) -> None:
    """The recipe removes, of level 0's trained weights, exactly 20% of the prunable ones:
    every weight it removed is at least as large as every weight it kept."""
    level = own_run / "replicate_0"
    mask = _npz(level / "level_1" / "mask.npz")
    weights = _npz(level / "level_0" / "params.npz")
    kernels = sorted(key for key in mask if key.endswith("kernel"))
    gone = np.concatenate([np.abs(weights["params" + k[4:]])[~mask[k]] for k in kernels])
    kept = np.concatenate([np.abs(weights["params" + k[4:]])[mask[k]] for k in kernels])
    assert len(gone) == round(0.2 * (len(gone) + len(kept)))
    assert gone.min() >= kept.max()


def test_own_method_through_an_entry_point(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package's ``[project.entry-points."lottery.methods"]``: its name is a
    method name (here the metadata pip would write, on PYTHONPATH)."""
    site = tmp_path / "site"
    info = site / "mymethods-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "mymethod_pkg.py").write_text(doc_block("Your own pruning method"))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mymethods\nVersion: 0.1\n")
    points = "[lottery.methods]\nlargest_first = mymethod_pkg:STRATEGY\n"
    (info / "entry_points.txt").write_text(points)
    monkeypatch.setenv("PYTHONPATH", str(site))
    done = run_cli(
        [*DIGITS, "pruning.method=largest_first", "pruning.levels=1", "results_root=by_name"],
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    (level,) = (folder / "by_name").glob("*/*/replicate_0/level_1/mask.npz")
    assert json.loads((level.parents[2] / "hashed.json").read_text())["pruning.method"] == (
        "largest_first"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("SHAPE", r"whose \S+kernel has shape \(\d+,\), not the weight's \(\d+, \d+\)"),
        ("COUNT", r"kept [\d,]+ prunable weights at level 1; its weight_groups declare"),
    ],
)
def test_a_wrong_mask_is_one_line_and_writes_no_level(folder: Path, name: str, message: str):
    done = run_cli(
        [*DIGITS, f"pruning.method=badmethods:{name}", "pruning.levels=1",
         "results_root=bad_" + name],
        cwd=folder,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: pruning.method='badmethods:{name}'"), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert not list((folder / f"bad_{name}").rglob("level_1"))


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("no_such_module:STRATEGY", "module 'no_such_module' does not import"),
        ("mymethod:MISSING", "has no attribute 'MISSING'"),
        ("mymethod:settings", "is a function, not a lottery.pruning.Strategy"),
        ("badmethods:UNKNOWN_KEY", "declares keys sharpness, which pruning does not have"),
        ("badmethods:OWN_KEY +pruning.own.sharp=1", "pruning.own.sharp does not apply"),
        ("magnitude +pruning.own.share=1", "whose own keys are: none"),
        ("mymethod:", "is not an import path"),
        ("no_such_method", "unknown pruning.method 'no_such_method'"),
    ],
)
def test_a_bad_own_method_is_one_config_error(
    folder: Path, monkeypatch: pytest.MonkeyPatch, method: str, message: str
) -> None:
    from lottery.pruning import strategy_for

    monkeypatch.chdir(folder)
    method, *more = method.split()
    cfg = make_config([*DIGITS, f"pruning.method={method}", *more])
    with pytest.raises(ConfigError, match=re.escape(message)):
        strategy_for(cfg.pruning)


def test_own_method_reads_a_setting_of_its_own(folder: Path) -> None:
    """``own_keys`` are set as ``pruning.own.<key>`` and enter the hash as any pruning key."""
    done = run_cli(
        [*DIGITS, "pruning.method=badmethods:OWN_KEY", "+pruning.own.share=0.5",
         "pruning.levels=1", "results_root=own_key"],
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    (level,) = (folder / "own_key").glob("*/*/replicate_0/level_1")
    mask = _npz(level / "mask.npz")
    kernels = [key for key in mask if key.endswith("kernel")]
    kept = sum(int(mask[k].sum()) for k in kernels)
    assert kept == sum(mask[k].size for k in kernels) // 2
    hashed = json.loads((level.parents[1] / "hashed.json").read_text())
    assert hashed["pruning.own.share"] == 0.5


def test_own_mask_update_of_the_wrong_shape_is_one_line(folder: Path) -> None:
    done = run_cli(
        [*DIGITS, "pruning.method=badmethods:BAD_UPDATE", "pruning.levels=1",
         "results_root=bad_update"],
        cwd=folder,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert re.search(r"returned a mask at step 10 whose \S+kernel has shape \(\d+,\)", lines[0])
    assert not list((folder / "bad_update").rglob("level_1/summary.json"))
