"""Every bad input we know of, run through the real command line: each must exit non-zero
with one line on stderr, no traceback, and no new file.

    python tests/bad_inputs.py          # prints one line per input and the counts
    python tests/bad_inputs.py --shard 0/2   # every second case, from the first
    python tests/bad_inputs.py --only checkpoint   # the cases whose description has the word

``tests/end_to_end/test_bad_inputs.py`` runs it in the test suite. Environment faults (a full disk,
Ctrl-C) are the exceptions to "no new file": what was finished before them must stay.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from readme import doc_block

QUICK = ["train.steps=200it", "progress=false"]  # the default MNIST-1D experiment, short
# How issue 28 ran the inputs it found getting through.
TWO_LEVELS = ("pruning.levels=2", "train.steps=300it", "train.eval_every=100it")
DIGITS = ["dataset=digits", "model.hidden=[64,32]", "train.batch_size=50", *QUICK]
NPZ = ("dataset.name=npz", "dataset.path=own.npz", "dataset.validation_size=40")


@dataclass(frozen=True)
class Case:
    what: str
    args: tuple[str, ...]
    setup: str = ""  # how to prepare the folder (see prepare())
    # Environment variables of the run; a case with any runs in a process of its own (JAX
    # reads them once, when it starts).
    env: tuple[tuple[str, str], ...] = ()

    @property
    def apart(self) -> bool:
        """Whether the case runs in a subprocess rather than in this process."""
        return self.setup in ("disk_full", "sigint", "slurm") or bool(self.env)


def case(what: str, *args: str, setup: str = "", env: dict[str, str] | None = None) -> Case:
    return Case(what, (*QUICK, *args), setup, tuple((env or {}).items()))  # its values win


CASES = [
    # The schema and Hydra.
    case("unknown key", "foo=1"),
    case("unknown nested key", "train.stepz=100it"),
    case("wrong type", "seed=abc"),
    case("unknown group option", "model=foo"),
    case("unknown preset", "+experiment=nope"),
    case("unknown preset, plain spelling", "experiment=nope"),
    case("an Optuna search space whose end is bad", "-m", "hydra/sweeper=optuna",
         "seed=tag(int,interval(-1,3))"),
    case("seed below 0", "seed=-1"),
    case("seed above 2^64", "seed=18446744073709551617"),
    case("data_seed below 0", "data_seed=-3"),
    case("name with a parent folder", "name=../../x"),
    case("empty name", "name="),
    case("hidden name", "name=.hidden"),
    # Values.
    case("unknown model", "model.name=foo"),
    case("unknown dataset", "dataset.name=foo"),
    case("unknown optimizer", "optimizer.name=rmsprop"),
    case("unknown schedule", "optimizer.schedule=linear"),
    case("unknown initialiser", "model.init=foo"),
    case("unknown pruning method", "pruning.method=snip2"),
    case("set over 10 levels", "pruning.method=set"),
    case("set ends after training", "pruning.method=set", "pruning.levels=1"),
    case("set sparsity 0", "pruning.method=set", "pruning.levels=1", "pruning.end_step=100it",
         "pruning.final_sparsity=0"),
    case("set drop fraction below 0", "pruning.method=set", "pruning.levels=1",
         "pruning.end_step=100it", "pruning.drop_fraction=-0.1"),
    case("set frequency 0", "pruning.method=set", "pruning.levels=1", "pruning.end_step=100it",
         "pruning.frequency=0it"),
    case("set key with magnitude", "pruning.drop_fraction=0.5"),
    case("rigl over 10 levels", "pruning.method=rigl"),
    case("rigl drop fraction above 1", "pruning.method=rigl", "pruning.levels=1",
         "pruning.end_step=100it", "pruning.drop_fraction=1.5"),
    case("rigl ends after training", "pruning.method=rigl", "pruning.levels=1"),
    case("instability of rigl", "branches=[instability]", "pruning.method=rigl",
         "pruning.levels=1", "pruning.end_step=100it"),
    case("nm over more levels than M - N", "pruning.method=nm", "pruning.levels=3"),
    case("pruning.own key for a built-in method", "+pruning.own.share=0.5"),
    case("pruning.own not a set of keys", "++pruning.own=3"),
    case("instability of set", "branches=[instability]", "pruning.method=set",
         "pruning.levels=1", "pruning.end_step=100it"),
    case("nm over 10 levels", "pruning.method=nm"),
    case("nm with N not below M", "pruning.method=nm", "pruning.levels=1", "pruning.nm_n=4"),
    case("nm key with magnitude", "pruning.nm_m=8"),
    case("nm on inputs not a multiple of M", *DIGITS, "model.hidden=[30]", "pruning.method=nm",
         "pruning.levels=1"),
    case("unknown distribution", "pruning.method=random", "pruning.distribution=erd"),
    case("erk with magnitude", "pruning.distribution=erk"),
    case("own method not importable", "pruning.method=no_such_module:STRATEGY"),
    case("own method name missing", "pruning.method=math:nothing"),
    case("own method not a Strategy", "pruning.method=math:pi"),
    case("own method not an import path", "pruning.method=mymethod:"),
    case("unknown pruning scope", "pruning.scope=local"),
    case("unknown logger", "logger.name=tensorboard"),
    case("unknown W&B mode", "logger=wandb", "logger.mode=sometimes"),
    case("fraction 1", "pruning.fraction=1.0"),
    case("negative fraction", "pruning.fraction=-0.1"),
    case("negative levels", "pruning.levels=-1"),
    case("rewind step past the end", "pruning.rewind_step=7000it"),
    case("rewind step not a duration", "pruning.rewind_step=soon"),
    case("steps not a duration", "train.steps=abc"),
    case("zero steps", "train.steps=0it"),
    case("eval_every zero", "train.eval_every=0it"),
    case("bad warmup", "optimizer.warmup=xyz"),
    case("bad milestone", "optimizer=sgd", "optimizer.schedule=step", "optimizer.milestones=[x]"),
    case("batch larger than the data", "train.batch_size=100000"),
    case("batch 0", "train.batch_size=0"),
    case("eval batch 0", "train.eval_batch_size=0"),
    case("negative validation size", "dataset.validation_size=-1"),
    case("validation size past the data", "dataset.validation_size=5000"),
    case("checkpoint cadence not a duration", "train.checkpoint_every=often"),
    case("checkpoint cadence 0", "train.checkpoint_every=0it"),
    case("keep 0 checkpoints", "train.keep_checkpoints=0"),
    case("prunable not a regex", "pruning.prunable=["),
    case("prunable selects nothing", "pruning.prunable=nothing"),
    case("layer fraction for no layer", "+pruning.layer_fractions={nope:0.1}"),
    case("layer fraction out of range", "+pruning.layer_fractions={fc1:1.5}"),
    case("unknown branch", "branches=[random_reinit,lottery]"),
    case("a branch listed twice", "branches=[random_prune,random_prune]"),
    case("unknown random_prune scope", "branches=[random_prune]", "branch.random_prune.scope=x"),
    case("rewind_to past the end", "branches=[rewind_to]", "branch.rewind_to.steps=[9000it]"),
    case("instability with 1 point", "branches=[instability]", "branch.instability.points=1"),
    case("instability of gradual", "branches=[instability]", "pruning.method=gradual",
         "pruning.levels=1", "pruning.end_step=100it"),
    case("lr_rewind of an at-init method", "branches=[lr_rewind]", "pruning.method=snip"),
    case("branch arguments without the branch", "branches=[]", "branch.finetune.steps=100it"),
    case("gradual rewinding past its start", "pruning.method=gradual", "pruning.levels=1",
         "pruning.begin_step=50it", "pruning.end_step=150it", "pruning.rewind_step=100it"),
    case("unknown precision", "train.precision=fp8"),
    case("no replicas", "train.replicas=0"),
    case("replicas and data parallelism", "train.replicas=2", "train.data_parallel=true"),
    case("replicas past the last seed", "train.replicas=3", "seed=4294967294"),
    case("negative branch seed", "branches=[random_reinit]", "branch.random_reinit.seed=-1"),
    case("huge instability data seed", "branches=[instability]",
         "branch.instability.data_seed=5000"),
    case("unknown criterion", "pruning.criterion=biggest"),
    case("structured with an L3 norm", "pruning.method=structured", "pruning.criterion=l3"),
    case("gradual over 10 levels", "pruning.method=gradual"),
    case("gradual ends after training", "pruning.method=gradual", "pruning.levels=1",
         "pruning.end_step=300it"),
    case("gradual sparsity 1", "pruning.method=gradual", "pruning.levels=1",
         "pruning.final_sparsity=1.0"),
    case("gradual key with magnitude", "pruning.final_sparsity=0.5"),
    case("synflow with 0 rounds", "pruning.method=synflow", "pruning.synflow_rounds=0"),
    case("GraSP temperature 0", "pruning.method=grasp", "pruning.grasp_temperature=0"),
    case("GraSP temperature with SNIP", "pruning.method=snip", "pruning.grasp_temperature=50"),
    case("score mode with magnitude", "pruning.score_mode=train"),
    case("unknown score mode", "pruning.method=snip", "pruning.score_mode=batch"),
    case("score mode with magnitude_init", "pruning.method=magnitude_init",
         "pruning.score_mode=train"),
    case("score mode with structured l1", "pruning.method=structured", "pruning.score_mode=eval"),
    case("Taylor criterion with oneshot", "pruning.method=oneshot", "pruning.criterion=taylor"),
    case("unknown instability batchnorm", "branches=[instability]",
         "branch.instability.batchnorm=reset"),
    case("instability recompute without BatchNorm", "branches=[instability]",
         "branch.instability.batchnorm=recompute"),
    case("instability recompute_batches under interpolate", "branches=[instability]",
         "branch.instability.recompute_batches=100it"),
    case("instability recompute on no batches", "branches=[instability]",
         "branch.instability.batchnorm=recompute", "branch.instability.recompute_batches=0it"),
    case("score examples without the Taylor criterion", "pruning.score_examples=50"),
    case("zero hidden width", "model.hidden=[0]"),
    case("negative width", "model=resnet20", "model.hidden=[100,100]", "model.width=-1"),
    # Keys that do not apply to the chosen model, optimizer, schedule or dataset.
    case("momentum with adam", "optimizer.momentum=0.9"),
    case("adam's b1 with sgd", "optimizer=sgd", "optimizer.b1=0.5"),
    case("milestones without a step schedule", "optimizer.milestones=[10it]"),
    case("hidden with a ResNet", "model=resnet20", "model.hidden=[10]"),
    case("width with an MLP", "model.width=8"),
    case("unknown training kernels", "model=resnet20", "model.hidden=[100,100]",
         "model.kernels=fast"),
    case("training kernels with an MLP", "model.kernels=cpu"),
    case("augmentation on 1-D data", "dataset.augment=true"),
    case("image size off ImageNet", "dataset.image_size=64"),
    case("a path for digits", *DIGITS, "dataset.path=/tmp"),
    # The model does not fit the data.
    case("2-D convolutions on 1-D data", "model=resnet20", "model.hidden=[100,100]"),
    # Divergence: the run stops with one line and keeps no finished-looking level.
    case("learning rate NaN", "optimizer.lr=nan"),
    case("learning rate inf", "optimizer.lr=inf"),
    case("learning rate 1e9", "optimizer.lr=1e9"),
    case("two seeds at once, diverging", "optimizer.lr=1e9", "train.replicas=2"),
    # Data that is missing or damaged.
    case("IDX directory missing", "dataset=idx", "dataset.path=/nonexistent/idx"),
    case("IDX files truncated", "dataset=idx", "dataset.path=idx", setup="idx_truncated"),
    case("IDX files empty", "dataset=idx", "dataset.path=idx", setup="idx_empty"),
    case("tfds dataset not prepared", "dataset=cifar10", "dataset.path=empty", setup="empty"),
    # A researcher's own data (dataset.name=npz, tfds:NAME).
    case("own npz: no dataset.path", "dataset.name=npz"),
    case("own npz: dataset.path missing", *NPZ[:1], "dataset.path=none.npz"),
    case("own npz: a folder", *NPZ[:1], "dataset.path=empty", setup="empty"),
    case("own npz: a FIFO", *NPZ, setup="own_npz_fifo"),
    case("own npz: not an npz", *NPZ, setup="own_npz_text"),
    case("own npz: an array missing", *NPZ, setup="own_npz_missing"),
    case("own npz: x of int16", *NPZ, setup="own_npz_int16"),
    case("own npz: x_test of another shape", *NPZ, setup="own_npz_shape"),
    case("own npz: NaN in x_train", *NPZ, setup="own_npz_nan"),
    case("own npz: float labels", *NPZ, setup="own_npz_float_labels"),
    case("own npz: negative label", *NPZ, setup="own_npz_negative"),
    case("own npz: lengths differ", *NPZ, setup="own_npz_lengths"),
    case("own npz: label past dataset.num_classes", *NPZ, "dataset.num_classes=2",
         setup="own_npz_right"),
    case("own npz: augment on 1-D examples", *NPZ, "dataset.augment=true",
         setup="own_npz_right"),
    case("own npz: num_classes on another dataset", "dataset.num_classes=3"),
    case("test_split off tfds", "dataset.test_split=extra"),
    case("tfds name empty", "dataset.name=tfds:"),
    case("tfds name unknown", "dataset.name=tfds:no_such_dataset"),
    case("tfds version unknown", "dataset.name=tfds:cifar100:9.9.9"),
    case("tfds not image classification", "dataset.name=tfds:imdb_reviews"),
    case("tfds images of varying size", "dataset.name=tfds:imagenette"),
    case("tfds name not prepared", "dataset.name=tfds:svhn_cropped", "dataset.path=empty",
         setup="empty"),
    # A model of one's own (model.name=package.module:Name; the files: setup="own_model").
    case("own model: module not found", "model.name=own_nothing:Net", setup="own_model"),
    case("own model: module's own import fails", "model.name=own_broken:Net", setup="own_model"),
    case("own model: syntax error", "model.name=own_syntax:Net", setup="own_model"),
    case("own model: attribute missing", "model.name=own_models:Nett", setup="own_model"),
    case("own model: empty attribute", "model.name=own_models:", setup="own_model"),
    case("own model: not a module", "model.name=own_models:CONSTANT", setup="own_model"),
    case("own model: a module instance", "model.name=own_models:instance", setup="own_model"),
    case("own model: factory returns no module", "model.name=own_models:not_a_module",
         setup="own_model"),
    case("own model: kwargs it does not take", "model.name=own_models:make_net",
         "++model.kwargs={depth:3}", setup="own_model"),
    case("own model: kwargs.num_classes", "model.name=own_models:Plain",
         "++model.kwargs={num_classes:3}", setup="own_model"),
    case("own model: output of 3 classes", "model.name=own_models:ThreeClasses",
         setup="own_model"),
    case("own model: does not take the data's shape", "model.name=own_models:Wide",
         setup="own_model"),
    case("own model: another variable collection", "model.name=own_models:Counter",
         setup="own_model"),
    case("own model: needs a dropout rng", "model.name=own_models:Dropping", setup="own_model"),
    case("own model: model.hidden", "model.name=own_models:Plain", "model.hidden=[64]",
         setup="own_model"),
    case("own model: model.width", "model.name=own_models:Plain", "model.width=8",
         setup="own_model"),
    case("own model: model.init", "model.name=own_models:Plain", "model.init=glorot_normal",
         setup="own_model"),
    case("own model: model.kernels", "model.name=own_models:Plain", "model.kernels=xla",
         setup="own_model"),
    case("own model: structured pruning", "model.name=own_models:Plain",
         "pruning.method=structured", setup="own_model"),
    case("own model: batchnorm_init without BatchNorm", "model.name=own_models:Plain",
         "model.batchnorm_init=uniform", setup="own_model"),
    case("zoo model with model.kwargs", "++model.kwargs={width:3}"),
    # A branch of one's own (the recipe of docs/guides/extending.md: setup="own_branch").
    case("own branch not importable", "branches=[no_such_module:BRANCH]"),
    case("own branch name missing", "branches=[math:nothing]"),
    case("own branch not a Branch", "branches=[math:pi]"),
    case("own branch not an import path", "branches=[mybranch:]"),
    case("own branch arguments without the branch", "+branch.own.mybranch.seed=1"),
    case("own branch unknown argument", "branches=[mybranch:BRANCH]",
         "+branch.own.fan_in_shuffle.sed=1", setup="own_branch"),
    case("own branch argument of the wrong type", "branches=[mybranch:BRANCH]",
         "+branch.own.fan_in_shuffle.seed=1.5", setup="own_branch"),
    # Starting from a trained model, budgets and deployment.
    case("init.checkpoint missing", "init.checkpoint=/nonexistent/params.npz"),
    case("init.checkpoint of another shape", "init.checkpoint=wrong.npz", setup="npz_wrong"),
    case("init.checkpoint not a weights file", "init.checkpoint=a_file", setup="file"),
    case("level 0 kept without a checkpoint", "init.train_level_0=false"),
    case("level 0 kept, rewinding past it", "init.checkpoint=right.npz", "init.train_level_0=false",
         "pruning.rewind_step=100it", setup="npz_right"),
    case("unknown start_from", "pruning.start_from=middle"),
    case("negative accuracy budget", "pruning.max_accuracy_drop=-1"),
    case("budget without validation data", "pruning.max_accuracy_drop=1",
         "dataset.validation_size=0"),
    case("unknown quantization", "deploy.quantize=int4"),
    case("unknown export format", "deploy.export=tflite"),
    case("weight-only int8 of a convolutional network", "model=mnist1d_cnn",
         "deploy.measure=true", "deploy.quantize=int8"),
    case("block pruning on a network without identity blocks", "pruning.method=blocks"),
    case("a key block pruning does not read", "model=resnet20", "pruning.method=blocks",
         "pruning.scope=layerwise"),
    case("model.width on a fully connected network", "model=mlp", "model.width=8"),
    # Found getting through by issue 28 (its own settings: two short levels).
    case("init.checkpoint holding strings", *TWO_LEVELS, "init.checkpoint=strings.npz",
         setup="npz_strings"),
    case("init.checkpoint a FIFO", *TWO_LEVELS, "init.checkpoint=weights.npz", setup="fifo"),
    case("init.checkpoint of complex weights", *TWO_LEVELS, "init.checkpoint=complex.npz",
         setup="npz_complex"),
    case("init.checkpoint all NaN, kept as level 0", *TWO_LEVELS, "init.checkpoint=nan.npz",
         "init.train_level_0=false", setup="npz_nan"),
    case("JAX_PLATFORMS=tpu without a TPU", *TWO_LEVELS, env={"JAX_PLATFORMS": "tpu"}),
    case("an unknown store lock", env={"LOTTERY_LOCK": "nfs"}),
    case("negative gamma", *TWO_LEVELS, "optimizer=sgd", "optimizer.schedule=step",
         "optimizer.milestones=[100it]", "optimizer.gamma=-0.5"),
    case("negative weight decay", *TWO_LEVELS, "optimizer.weight_decay=-1"),
    case("learning rate 0", *TWO_LEVELS, "optimizer.lr=0"),
    case("negative learning rate", *TWO_LEVELS, "optimizer.lr=-0.1"),
    case("momentum 1", *TWO_LEVELS, "optimizer=sgd", "optimizer.momentum=1.0"),
    case("adam's b2 1", *TWO_LEVELS, "optimizer.b2=1.0"),
    case("negative adam eps", *TWO_LEVELS, "optimizer.eps=-1e-8"),
    case("a rewind_to step listed twice", *TWO_LEVELS, "branches=[rewind_to]",
         "branch.rewind_to.steps=[100it,100it]"),
    case("a rewind_to step spelled two ways", *TWO_LEVELS, "branches=[rewind_to]",
         "branch.rewind_to.steps=[0it,1ep,35it]"),  # 3,500 training examples / 100
    case("quantize without measuring", *TWO_LEVELS, "deploy.quantize=int8"),
    case("1,000 replicas", *TWO_LEVELS, "train.replicas=1000"),
    case("replicas past the memory", *TWO_LEVELS, "train.replicas=64",
         "model.hidden=[30000,30000]"),
    case("levels past what the network can lose", *TWO_LEVELS, "pruning.levels=200"),
    case("data parallel batch that does not split", *TWO_LEVELS, "train.data_parallel=true",
         "train.batch_size=100", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}),
    # Sweeps (-m) are checked before any job starts.
    case("sweep with an unknown key", "-m", "seed=0,1", "foo=1"),
    case("sweep with a bad value", "-m", "pruning.fraction=0.2,1.5"),
    case("sweep bad only in combination", "-m", "pruning.method=magnitude,gradual",
         "pruning.levels=1,10"),
    case("sweep whose every job fails", "-m", "optimizer.lr=1e9,1e10"),
    case("sbatch refuses a GPU", "-m", "seed=1,2", "hydra/launcher=slurm", setup="slurm"),
    case("sbatch refuses the partition", "-m", "seed=1,2", "hydra/launcher=slurm",
         "hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=nope", setup="slurm"),
    case("a job no node can run", "-m", "seed=1,2", "hydra/launcher=slurm_cpu",
         "hydra.launcher.cpus_per_task=4096", setup="slurm"),
    case("so many steps their batch order cannot fit", "dataset=digits",
         "train.steps=100000000it"),
    case("LOTTERY_NUM_PROCESSES without a coordinator", env={"LOTTERY_NUM_PROCESSES": "2"}),
    case("LOTTERY_COORDINATOR without a port", env={
        "LOTTERY_COORDINATOR": "localhost", "LOTTERY_NUM_PROCESSES": "2",
        "LOTTERY_PROCESS_ID": "0"}),
    case("LOTTERY_PROCESS_ID past the processes", env={
        "LOTTERY_COORDINATOR": "127.0.0.1:1", "LOTTERY_NUM_PROCESSES": "2",
        "LOTTERY_PROCESS_ID": "2"}),
    case("LOTTERY_NUM_PROCESSES not a number", env={
        "LOTTERY_COORDINATOR": "127.0.0.1:1", "LOTTERY_NUM_PROCESSES": "two",
        "LOTTERY_PROCESS_ID": "0"}),
    # Where results go.
    case("results_root is a file", "results_root=a_file", setup="file"),
    case("results_root under /proc", "results_root=/proc/lottery_results"),
    # Environment faults during a run.
    case("the disk fills up", "pruning.levels=10", "train.steps=300it", setup="disk_full"),
    case("Ctrl-C during training", "train.steps=200000it", setup="sigint"),
]


def write_idx(folder: Path, truncated: bool, empty: bool) -> None:
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        for kind, shape in (("images-idx3", (n, 8, 8)), ("labels-idx1", (n,))):
            array = rng.integers(0, 10, shape).astype(np.uint8)
            data = bytes([0, 0, 8, array.ndim])
            data += b"".join(int(d).to_bytes(4, "big") for d in shape) + array.tobytes()
            if empty:
                data = b""
            elif truncated and kind.startswith("images"):
                data = data[: len(data) // 2]
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(data)


def write_mlp_weights(path: Path, kind: str) -> None:
    """Weights of the default MLP in a .npz: ``right``, or with ``fc2/kernel`` of the
    ``wrong`` shape, as ``strings``, ``complex`` or ``nan`` values."""
    import numpy as np

    shapes = {"fc1/kernel": (40, 100), "fc1/bias": (100,), "fc2/kernel": (100, 100),
              "fc2/bias": (100,), "out/kernel": (100, 10), "out/bias": (10,)}
    arrays = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    if kind == "wrong":
        arrays["fc2/kernel"] = np.zeros((100, 64), np.float32)
    elif kind == "strings":
        arrays["fc2/kernel"] = np.full((100, 100), "w", dtype="<U1")
    elif kind == "complex":
        arrays["fc2/kernel"] = np.full((100, 100), 0.1 + 0.2j, np.complex64)
    elif kind == "nan":
        arrays = {k: np.full(v, np.nan, np.float32) for k, v in shapes.items()}
    np.savez(path, **arrays)


# A model of one's own (tests/models/test_own_model.py has the working runs): one file of modules,
# good and bad, and two files that do not import. MNIST-1D: (40,) examples, 10 classes.
OWN_MODELS = '''
import flax.linen as nn
import jax.numpy as jnp

CONSTANT = 3


class Plain(nn.Module):
    num_classes: int
    width: int = 16

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.width)(x)))


def make_net(num_classes, width=16):
    return Plain(num_classes, width)


class ThreeClasses(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(x)


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
        return nn.Dense(self.num_classes)(x)


class Dropping(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(self.num_classes)(nn.Dropout(0.5, deterministic=not train)(x))


instance = ThreeClasses()


def not_a_module(num_classes):
    return {"layers": num_classes}
'''


def write_own_models(folder: Path) -> None:
    (folder / "own_models.py").write_text(OWN_MODELS)
    (folder / "own_broken.py").write_text("import notapackage\n")
    (folder / "own_syntax.py").write_text("def (:\n")


def write_own_npz(path: Path, kind: str) -> None:
    """A dataset .npz of 300 + 60 examples of 12 features, 3 classes: ``right``, or broken
    as ``kind`` says (``fifo`` and ``text`` are not .npz files at all)."""
    import os

    import numpy as np

    if kind == "fifo":
        os.mkfifo(path)
        return
    if kind == "text":
        path.write_text("not an archive")
        return
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(300, 12)).astype(np.float32),
              "y_train": rng.integers(0, 3, 300), "x_test": rng.normal(size=(60, 12)),
              "y_test": rng.integers(0, 3, 60)}
    if kind == "missing":
        del arrays["y_test"]
    elif kind == "int16":
        arrays["x_train"] = arrays["x_train"].astype(np.int16)
    elif kind == "shape":
        arrays["x_test"] = arrays["x_test"][:, :5]
    elif kind == "nan":
        arrays["x_train"][3, 2] = np.nan
    elif kind == "float_labels":
        arrays["y_train"] = arrays["y_train"].astype(np.float32)
    elif kind == "negative":
        arrays["y_train"] = arrays["y_train"] - 1
    elif kind == "lengths":
        arrays["y_train"] = arrays["y_train"][:-1]
    np.savez(path, **arrays)


def prepare(setup: str, folder: Path) -> str | None:
    """Make the folder's starting state; returns a cleanup command's mount point, if any."""
    if setup in ("idx_truncated", "idx_empty"):
        write_idx(folder / "idx", truncated=setup == "idx_truncated", empty=setup == "idx_empty")
    elif setup == "own_model":
        write_own_models(folder)
    elif setup == "own_branch":
        (folder / "mybranch.py").write_text(doc_block("Your own branch"))
    elif setup.startswith("own_npz_"):
        write_own_npz(folder / "own.npz", setup.removeprefix("own_npz_"))
    elif setup.startswith("npz_"):  # weights of the default MLP (40-100-100-10)
        write_mlp_weights(folder / f"{setup[4:]}.npz", setup[4:])
    elif setup == "fifo":
        os.mkfifo(folder / "weights.npz")  # a read would wait for a writer forever
    elif setup == "empty":
        (folder / "empty").mkdir()
    elif setup == "file":
        (folder / "a_file").write_text("not a folder")
    elif setup == "disk_full":
        mount = folder / "small"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=500k", "tmpfs", str(mount)],
                              capture_output=True)
        return str(mount) if done.returncode == 0 else "unavailable"
    return None


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@dataclass
class Outcome:
    case: Case
    verdict: str  # clear | traceback | silent | several lines | new files | skipped
    detail: str


def run_in_process(args: list[str], folder: Path) -> tuple[int, str]:
    """``python -m lottery ARGS`` in this process (no interpreter start-up: about 20 times
    faster); returns the exit code and what went to stderr."""
    import contextlib
    import io
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    from lottery import __main__ as entry

    stderr, argv, cwd = io.StringIO(), sys.argv, os.getcwd()
    sys.argv, code = ["lottery", *args], 0
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            entry.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    except BaseException:  # an uncaught exception is what a user would see as a traceback
        traceback.print_exc(file=stderr)
        code = 1
    finally:
        sys.argv = argv
        os.chdir(cwd)
        GlobalHydra.instance().clear()
    return code, stderr.getvalue()


def run_case(item: Case) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mount = prepare(item.setup, folder)
        if mount == "unavailable":
            return Outcome(item, "skipped", "cannot mount a small tmpfs here")
        before = files_under(folder)
        root = f"results_root={mount}/results" if mount else "results_root=results"
        args = [root, *item.args] if not any(a.startswith("results_root=") for a in item.args) \
            else list(item.args)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **dict(item.env)}
        command = [sys.executable, "-m", "lottery", *args]
        try:
            if item.setup == "sigint":
                # SIGINT as in a terminal, even where this runs with it ignored (a job
                # started in the background by a shell without job control).
                process = subprocess.Popen(command, cwd=folder, env=env, text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           preexec_fn=_default_sigint)
                _wait_for_training(folder)
                process.send_signal(signal.SIGINT)
                _, stderr = process.communicate(timeout=120)
                code = process.returncode
            elif item.setup == "slurm":
                from slurm import slurm_cluster  # tests/slurm.py

                with slurm_cluster() as conf:
                    if conf is None:
                        return Outcome(item, "skipped", "no Slurm (apt-get install slurm-wlm)")
                    done = subprocess.run(command, cwd=folder, text=True, capture_output=True,
                                          env={**env, "SLURM_CONF": str(conf)}, timeout=300)
                stderr, code = done.stderr, done.returncode
            elif item.setup == "disk_full" or item.env:
                done = subprocess.run(command, cwd=folder, env=env, text=True,
                                      capture_output=True, timeout=300)
                stderr, code = done.stderr, done.returncode
            else:
                code, stderr = run_in_process(args, folder)
            after = files_under(folder)
        finally:
            if mount:
                subprocess.run(["umount", mount], capture_output=True)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if "Traceback" in stderr:
        return Outcome(item, "traceback", stderr.strip().splitlines()[-1])
    if code == 0:
        return Outcome(item, "silent", "exit 0")
    if item.setup == "sigint" and code != 130:  # as a shell's Ctrl-C: 128 + SIGINT
        return Outcome(item, "several lines", f"exit {code}, not 130")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return Outcome(item, "several lines", " | ".join(lines)[:300])
    if item.setup not in ("disk_full", "sigint") and after - before:
        return Outcome(item, "new files", ", ".join(sorted(after - before))[:200])
    return Outcome(item, "clear", lines[0])


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_training(folder: Path, timeout: float = 120.0) -> None:
    """Until the run has an unfinished level (it is training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(folder.rglob("level_0.partial")):
            time.sleep(1.0)
            return
        time.sleep(0.2)


# The background thread starts its subprocesses while this process has JAX loaded, and
# Python warns of forking a multithreaded process on whatever sys.stderr is at that moment:
# the in-process case's captured stderr. The fork is the runner's (it execs at once), not
# the command's, so its warning is not the case's output.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def run_all(cases: list[Case] = CASES) -> list[Outcome]:
    """The subprocess cases in the background, the others in this process, in turn (they
    change the working directory, so not in threads of their own)."""
    apart = [c for c in cases if c.apart]
    with ThreadPoolExecutor(1) as pool:
        background = pool.map(run_case, apart)
        here = {c: run_case(c) for c in cases if c not in apart}
        here.update(zip(apart, background, strict=True))
    return [here[c] for c in cases]


def main(argv: list[str]) -> int:
    """``--shard K/N`` runs every N-th case from the K-th (0-based): the test suite runs the
    shards side by side. ``--only WORDS`` runs the cases whose description holds WORDS."""
    cases = CASES
    if argv[:1] == ["--shard"]:
        index, count = (int(part) for part in argv[1].split("/"))
        cases = CASES[index::count]
    elif argv[:1] == ["--only"]:
        cases = [c for c in CASES if argv[1].lower() in c.what.lower()]
    if shutil.which("mount") is None:
        print("note: no `mount`: the full-disk case is skipped")
    outcomes = run_all(cases)
    for outcome in outcomes:
        print(f"{outcome.verdict:>13}  {outcome.case.what}: {outcome.detail}")
    counts = {v: sum(o.verdict == v for o in outcomes) for v in
              ("clear", "traceback", "silent", "several lines", "new files", "skipped")}
    print(f"{len(outcomes)} bad inputs tried: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 0 if counts["clear"] + counts["skipped"] == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
