"""Hydra's conventions: ``experiment=NAME`` (and ``+experiment=NAME``), each invocation's
``.hydra/`` record beside its results, the Optuna sweeper and its objective, the Slurm job
name; and the step schedule against optax's own."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lottery import cli
from lottery.cli import CONFIG_DIR, objective, plain_experiment
from lottery.config import register
from lottery.train.optim import _step_decay

from conftest import DIGITS, run_cli

PRESETS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
SMALL = [o for o in DIGITS if not o.startswith("pruning.levels")] + ["pruning.levels=1"]


def composed(overrides, hydra=False):
    register()
    cli.use_optuna_profile()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


# -- experiment=NAME ------------------------------------------------------------------------


@pytest.mark.slow
def test_both_spellings_of_a_preset_compose_the_same_config():
    """``experiment=NAME`` is the preset, as ``+experiment=NAME`` always was: every preset's
    values win over the defaults (its name, model), a later override over the preset."""
    for preset in PRESETS:
        plain = composed([f"experiment={preset}", "seed=3"])
        plus = composed(plain_experiment([f"+experiment={preset}", "seed=3"]))
        assert OmegaConf.to_container(plain) == OmegaConf.to_container(plus), preset
        assert plain.name == preset and plain.seed == 3
    assert composed([]).name == "mnist1d_imp"  # no preset: the default experiment
    assert composed(["experiment=lenet_fashion_imp"]).model.name == "lenet_300_100"


def test_plain_experiment_rewrites_only_the_experiment_group():
    assert plain_experiment(["+experiment=a", "++experiment=b", "+pruning.own.x=1",
                             "name=+experiment=c"]) == [
        "experiment=a", "experiment=b", "+pruning.own.x=1", "name=+experiment=c"]


def test_a_sweep_over_presets_is_checked_in_the_plain_spelling():
    assert cli.check_overrides(["+experiment=mnist1d_imp,lenet_openlth", "-m"]) is None
    message = cli.check_overrides(["+experiment=mnist1d_imp,nope", "-m"])
    assert message.startswith("Could not find 'experiment/nope'; available: conv2_imp")


# -- the .hydra/ record of each invocation ---------------------------------------------------


@pytest.mark.slow
def test_a_run_records_hydras_config_beside_its_results_and_a_rerun_adds_its_own(tmp_path):
    args = ["experiment=mnist1d_imp", *SMALL, f"results_root={tmp_path / 'r'}"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    [experiment] = [p for p in (tmp_path / "r" / "mnist1d_imp").iterdir()
                    if not p.name.startswith("dense_")]
    [record] = (experiment / ".hydra").iterdir()
    assert f"hydra: {record}" in first.stdout
    assert yaml.safe_load((record / "overrides.yaml").read_text()) == args
    recorded = yaml.safe_load((record / "config.yaml").read_text())
    assert recorded == OmegaConf.to_container(composed(args))
    hydra = yaml.safe_load((record / "hydra.yaml").read_text())["hydra"]
    assert hydra["overrides"]["task"] == args and hydra["job"]["name"] == "__main__"
    assert not list(tmp_path.glob("**/outputs")) and not (tmp_path / ".hydra").exists()

    summary = (experiment / "replicate_0" / "level_1" / "summary.json").read_text()
    again = run_cli(args, tmp_path)  # resumes the finished experiment: nothing trained
    assert again.returncode == 0, again.stderr[-2000:]
    assert "weights left, test accuracy" not in again.stdout
    assert len(list((experiment / ".hydra").iterdir())) == 2  # one per invocation
    assert [p.name for p in (tmp_path / "r" / "mnist1d_imp").iterdir()
            if not p.name.startswith("dense_")] == [experiment.name]  # the same hash
    assert (experiment / "replicate_0" / "level_1" / "summary.json").read_text() == summary


def test_two_records_of_one_second_and_process_get_folders_of_their_own(tmp_path):
    first = cli._new_folder(tmp_path / ".hydra", "2026-01-01_00-00-00_7")
    second = cli._new_folder(tmp_path / ".hydra", "2026-01-01_00-00-00_7")
    assert (first.name, second.name) == ("2026-01-01_00-00-00_7", "2026-01-01_00-00-00_7-2")
    assert first.is_dir() and second.is_dir()


# -- the Optuna sweeper ------------------------------------------------------------------------


def test_the_objective_is_the_sparsest_levels_validation_accuracy_over_replicates():
    summaries = [
        {"replicate": r, "level": lv, "branch": "imp", "val_accuracy": 0.5 + lv / 10 + r / 100,
         "test_accuracy": 0.0}
        for r in (0, 1) for lv in (0, 1, 2)
    ] + [{"replicate": 0, "level": 3, "branch": "random_reinit", "val_accuracy": 0.0}]
    assert objective(summaries) == pytest.approx(0.705)
    assert objective([{"level": 0, "branch": "imp", "test_accuracy": 0.9}]) is None
    assert objective([]) is None


def test_the_optuna_profile_maximises_one_trial_at_a_time():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweeper = composed(["hydra/sweeper=optuna"], hydra=True).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert (str(sweeper.direction), sweeper.n_jobs, sweeper.study_name) == (
        "Direction.maximize", 1, "mnist1d_imp")


@pytest.mark.slow
def test_an_optuna_sweep_runs_three_trials_and_reports_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = run_cli(
        ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
         "hydra.sweeper.sampler.seed=0", "optimizer.lr=interval(0.001,0.01)", *SMALL,
         f"results_root={tmp_path / 'r'}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted((tmp_path / "r").glob("mnist1d_imp/*/.hydra/*/overrides.yaml"))
    assert len(records) == 3  # a learning rate per trial: an experiment each
    rates = [o for file in records for o in yaml.safe_load(file.read_text())
             if o.startswith("optimizer.lr=")]
    assert len(set(rates)) == 3 and all(0.001 <= float(r.split("=")[1]) <= 0.01 for r in rates)
    [best] = (tmp_path / "multirun").glob("*/optimization_results.yaml")
    best = yaml.safe_load(best.read_text())
    values = [json.loads(f.read_text())["val_accuracy"]
              for f in (tmp_path / "r").glob("mnist1d_imp/*/replicate_0/level_1/summary.json")]
    assert best["best_value"] == max(values)


def test_an_interval_of_a_search_is_checked_at_both_ends():
    message = cli.check_overrides(["-m", "hydra/sweeper=optuna", "seed=tag(int,interval(-1,3))"])
    assert message is not None and "seed=-1" in message
    assert cli.check_overrides(["-m", "hydra/sweeper=optuna", "seed=tag(int,interval(0,3))",
                                "optimizer.lr=tag(log,interval(1e-4,1e-2))"]) is None


# -- Slurm -----------------------------------------------------------------------------------


def test_the_slurm_job_is_named_lottery_and_the_experiment():
    launcher = composed(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    assert launcher.name == "lottery-mnist1d_imp"
    launcher = composed(["experiment=resnet_imp", "hydra/launcher=slurm"], hydra=True)
    assert launcher.hydra.launcher.name == "lottery-resnet_imp"


def test_the_cpu_slurm_profile_asks_for_no_gpu():
    """hydra/launcher=slurm_cpu: slurm's profile without the GPU a CPU node cannot give."""
    slurm = composed(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    cpu = composed(["hydra/launcher=slurm_cpu"], hydra=True).hydra.launcher
    assert (slurm.gpus_per_node, cpu.gpus_per_node) == (1, 0)
    assert cpu.cpus_per_task == 2 and cpu.mem_gb == 8
    same = {"name", "timeout_min", "max_num_timeout", "array_parallelism", "_target_"}
    assert {k: cpu[k] for k in same} == {k: slurm[k] for k in same}


# -- the step schedule against optax's own ---------------------------------------------------


def reference(lr, gamma, milestones):
    """The step schedule as it has always been computed (results of earlier runs)."""
    points = jnp.asarray(sorted(milestones), jnp.int32)
    return lambda step: lr * gamma ** jnp.sum(step >= points)


def values(schedule, steps):
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)))


def test_the_step_schedule_applies_a_milestone_at_its_step_as_optax_does():
    ours = values(_step_decay(0.1, 0.1, [100, 200]), [99, 100, 101, 199, 200, 201])
    theirs = values(optax.piecewise_constant_schedule(0.1, {100: 0.1, 200: 0.1}),
                    [99, 100, 101, 199, 200, 201])
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(ours, [0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


@pytest.mark.parametrize(("lr", "gamma", "milestones"), [
    (0.1, 0.1, [32000, 48000]),  # resnet_imp, vgg16_imp (in iterations)
    (0.4, 0.1, [150, 300, 400]),  # resnet50_imagenet_imp's shape
    (1.2e-3, 0.1, [100, 150]),
    (2e-3, 0.2, [10, 10, 40]),  # a milestone twice: gamma twice
])
def test_the_step_schedule_is_optaxs_within_an_ulp_and_its_own_bit_for_bit(
    lr, gamma, milestones
):
    """optax's piecewise_constant_schedule multiplies its scales one after the other, 1 ulp
    from ``lr * gamma ** n`` for some settings (1.2e-3 with gamma 0.1): the schedule keeps
    its own expression, so earlier runs stay bit for bit."""
    steps = np.arange(0, max(milestones) + 3)
    ours = values(_step_decay(lr, gamma, milestones), steps)
    np.testing.assert_array_equal(ours, values(reference(lr, gamma, milestones), steps))
    scales = {m: gamma ** milestones.count(m) for m in milestones}
    theirs = values(optax.piecewise_constant_schedule(lr, scales), steps)
    assert np.all(np.abs(ours - theirs) <= np.spacing(np.abs(ours)))
