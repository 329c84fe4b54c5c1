"""The typed config tree, registered in Hydra's ConfigStore.

``conf/config.yaml`` lists ``lottery_schema`` first in its defaults, so Hydra checks every
value against these dataclasses: an unknown key or a value of the wrong type fails at start.
Which values are *allowed* (a known model, a fraction in [0, 1), ...) is checked by
:mod:`lottery.config.validate`, which needs the registries of the lower layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class DatasetConfig:
    """Where the examples come from."""

    name: str = "mnist1d"
    # Directory of the data: IDX files for ``idx``, tensorflow-datasets' data_dir for tfds
    # datasets, a cache directory for generated ones. Not part of the experiment hash.
    path: str | None = None
    # Examples held out of the end of the training split for validation (early stopping).
    validation_size: int = 500
    # Subtract the training set's mean and divide by its standard deviation.
    normalize: bool = True
    # Random crop (pad 4) and horizontal flip on the device, for image datasets.
    augment: bool = False
    # Side of the square crops of streamed datasets (ImageNet: 224).
    image_size: int = 224
    # ``tfds:NAME`` datasets: the tfds splits of the training examples (validation held out
    # of their end) and of the test examples; tfds' syntax (``train[:50%]``, ``train+extra``).
    train_split: str = "train"
    test_split: str = "test"
    # ``npz`` datasets: the number of classes; 0 = the largest label + 1.
    num_classes: int = 0


@dataclass
class ModelConfig:
    """Which network, by name (see ``lottery.models.MODELS``), or a model of your own by
    import path ``package.module:Name`` (see ``lottery.models.user``)."""

    name: str = "mlp"
    # Keyword arguments of a model of your own (``model.name=pkg.mod:Name``): its class's
    # fields, or its factory's keyword arguments. Hashed (every entry).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Widths of the hidden layers of ``mlp``.
    hidden: list[int] = field(default_factory=lambda: [100, 100])
    # Weight initialiser of Dense and Conv kernels: kaiming_normal or glorot_normal.
    init: str = "kaiming_normal"
    # Width multiplier or base width of the convolutional families (0 = the paper's).
    width: int = 0
    # BatchNorm scales: "ones" (Flax, PyTorch) or "uniform" U[0, 1) (OpenLTH's CIFAR/ImageNet
    # networks). Shifts are 0 either way.
    batchnorm_init: str = "ones"
    # Biases of dense/conv layers: "zeros" or "pytorch", U(±1/sqrt(fan_in)) as OpenLTH keeps.
    bias_init: str = "zeros"
    # Kernels: "xla" (Flax's Conv, BatchNorm and max-pool as XLA compiles them), "cpu"
    # (convolution gradients, BatchNorm sums, max-pool gradients and small-map convolutions
    # written for XLA's CPU backend, also faster on a GPU: lottery.kernels.layers) or
    # "auto" (cpu on a CPU or a GPU, xla on a TPU).
    # Equal to float rounding, so not hashed.
    kernels: str = "auto"


@dataclass
class OptimizerConfig:
    """An optax optimizer and its learning-rate schedule."""

    name: str = "adam"  # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    # L2 penalty added to the gradient of every parameter (PyTorch's ``weight_decay``);
    # decoupled for ``adamw``.
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    schedule: str = "constant"  # constant | step | cosine
    # ``step``: multiply the rate by ``gamma`` at each milestone (step strings).
    milestones: list[str] = field(default_factory=list)
    gamma: float = 0.1
    # Linear warmup from 0 to ``lr`` over this duration, before the schedule.
    warmup: str = "0it"


@dataclass
class PruningConfig:
    """Iterative magnitude pruning: what to prune, how much, and where to rewind."""

    method: str = "magnitude"
    scope: str = "global"  # global | layerwise
    # Fraction of the remaining prunable weights removed at each level.
    fraction: float = 0.2
    # Per-layer fractions that replace ``fraction``; keys are regexes matched in full against
    # the layer's path (e.g. ``out`` or ``block.*/conv1``). Under global scope these layers
    # are pruned on their own at their rate, the rest together at ``fraction``.
    layer_fractions: dict[str, float] = field(default_factory=dict)
    # Regex matched in full against parameter paths ("fc1/kernel"): which leaves are prunable.
    prunable: str = r".*kernel"
    # Levels after the dense one (level 0). Not in the experiment hash: more levels extend a run.
    levels: int = 10
    # Where level L >= 1 rewinds its surviving weights to: 0 = initialisation.
    rewind_step: str = "0it"
    # What level L >= 1 trains from: "rewind" (the weights at ``rewind_step``, the lottery
    # ticket) or "previous" (level L-1's trained weights, pruned, then fine-tuned from
    # ``rewind_step`` of the schedule: prune-and-fine-tune, Han et al. 2015).
    start_from: str = "rewind"
    # Prune to an accuracy budget: stop after the first level whose validation accuracy is
    # more than this many points below level 0's; the level before it is the answer. None:
    # every level runs. Needs a validation split. Not in the experiment hash.
    max_accuracy_drop: float | None = None
    # What ranks the weights (None: the method's own). magnitude: magnitude |w_T|,
    # magnitude_increase |w_T| - |w_k|, movement |w_T - w_k| (Zhou et al. 2019), taylor
    # |w_T · g|; structured: l1 or l2, the norm of each neuron's or channel's weights, or
    # taylor, Molchanov et al. 2017's first-order change of the loss.
    criterion: str | None = None
    # gradual (Zhu & Gupta 2017, tfmot's PolynomialDecay): inside one training, every
    # ``frequency`` steps from ``begin_step`` to ``end_step`` each prunable layer is pruned to
    # s(t) = s_f + (s_i - s_f) (1 - (t - t_0) / (t_1 - t_0))^power.
    initial_sparsity: float = 0.0
    final_sparsity: float = 0.8
    begin_step: str = "0it"
    end_step: str = "1000it"
    frequency: str = "100it"
    power: int = 3
    # synflow: rounds of scoring and pruning towards each level's target (Tanaka et al. 2020).
    synflow_rounds: int = 100
    # snip, grasp, and criterion=taylor: training examples the scores are computed on
    # (GraSP's 10 per class x 10).
    score_examples: int = 100
    # grasp: the softmax temperature T of both passes (logits / T), 200 as in Wang et al.'s
    # and Synaptic-Flow's code; 1 is the plain loss.
    grasp_temperature: float = 200.0
    # snip, grasp, synflow, and criterion=taylor: how the network runs while it is scored,
    # eval (BatchNorm by its running statistics) or train (by each batch's own; the running
    # statistics are not updated). None: the method's own, eval (Synaptic-Flow's and the SNIP
    # authors' code score in eval mode) except structured taylor, train (Molchanov et al.
    # compute it while fine-tuning). Without BatchNorm both modes are the same.
    score_mode: str | None = None
    # structured, criterion=taylor: subtract this times each unit's share of the FLOPs (the
    # costliest unit counts 1) from its normalised score (Molchanov et al. 2017's variant).
    taylor_flops_weight: float = 0.0
    # nm: of each M consecutive input weights of an output unit, keep the N largest |w|
    # (2:4, the pattern sparse tensor cores run).
    nm_n: int = 2
    nm_m: int = 4
    # random and the at-initialisation methods: the per-layer density, uniform (one ranking
    # over all prunable layers) or erk (Evci et al. 2020's Erdős–Rényi-Kernel densities).
    distribution: str = "uniform"
    # set: the share of each layer's alive weights dropped and regrown at each update,
    # decayed by RigL's cosine schedule to 0 at ``end_step`` (Evci et al. 2020).
    drop_fraction: float = 0.3

    # The settings of a pruning method of one's own (its ``Strategy.own_keys``), by key:
    # ``+pruning.own.sharpness=2``. In the hash as every pruning key; empty for the built-ins.
    own: dict[str, Any] = field(default_factory=dict)

@dataclass
class TrainConfig:
    """One training run of one level."""

    steps: str = "6000it"
    batch_size: int = 100
    eval_every: str = "300it"
    eval_batch_size: int = 1000
    # Each level draws its own batch order and augmentation from (data_seed, level), as the
    # papers do (fresh SGD noise per level); true replays level 0's batches at every level.
    replay_data_order: bool = False
    # Checkpoint the whole training state every this many steps ("2000it", "1ep") or, with
    # a time ("30s", "5min"), at the first evaluation that long after the previous one.
    # A run started again resumes from the newest checkpoint. Not in the experiment hash.
    checkpoint_every: str = "5min"
    # Checkpoints kept per unfinished level (the newest ones). Not in the experiment hash.
    keep_checkpoints: int = 2
    # fp32, or bf16: forward and backward in bfloat16 with float32 master weights (for GPUs
    # and TPUs; on a CPU bfloat16 is emulated and slower).
    precision: str = "fp32"
    # Split each batch over every local device (GPUs, TPU cores, or CPU devices made with
    # XLA_FLAGS=--xla_force_host_platform_device_count=N); the same results to float
    # rounding. Datasets held on the device only. Not in the experiment hash.
    data_parallel: bool = False
    # Train this many seeds (seed, seed+1, ...) at once: their steps run as one vmapped,
    # jit-compiled step, split over the local devices; each seed writes its own replicate,
    # equal to training it alone to float rounding. Datasets held on the device only. Not
    # in the experiment hash.
    replicas: int = 1


@dataclass
class InitConfig:
    """Where level 0's weights come from: the model's initialiser, or a trained model."""

    # A trained model to start from: a level folder of a results store, an Orbax checkpoint,
    # or a .npz / .safetensors file keyed by parameter path ("fc1/kernel"; statistics as
    # "batch_stats/..."). Hashed by the weights' content, not by the path.
    checkpoint: str | None = None
    # false: level 0 is the loaded model as it is, evaluated and not trained (needs
    # ``checkpoint``); pruning starts from it.
    train_level_0: bool = True


@dataclass
class DeployConfig:
    """What each level would cost to ship. Not in the experiment hash (it changes no
    training): a finished experiment run again with ``deploy.measure=true`` is measured."""

    # Sizes on disk, CPU latency (dense, and compacted or BCOO-sparse) and, with
    # ``quantize``, the int8 network's accuracy: deployment.json per level, and the table.
    measure: bool = False
    # none, int8 (int8 weights per output channel, Qwix), or int8_dynamic (int8 weights and
    # activations quantized on the fly).
    quantize: str = "none"
    # Write the chosen level (the accuracy budget's, or the last): none; jax_export (or
    # true: a jax.export artifact, model.jax_export); onnx (model.onnx, for onnxruntime and
    # the runtimes that read ONNX); all (both).
    export: str = "none"


@dataclass
class LoggerConfig:
    """Where metrics go besides the local store: ``none`` or ``wandb``. Not in the hash."""

    name: str = "none"  # none | wandb
    # W&B: offline (files on disk; `wandb sync` later), online, or disabled.
    mode: str = "offline"
    project: str = "lottery"
    entity: str | None = None
    # Directory for W&B's files; default: <results_root>/wandb.
    dir: str | None = None
    # W&B: also upload each level's mask.npz and params.npz as a model artifact.
    artifacts: bool = False


@dataclass
class RandomReinitBranch:
    """The level's mask with a new random initialisation (Frankle & Carbin 2019's control)."""

    # Which new initialisation, besides the replicate and the level.
    seed: int = 0


@dataclass
class RandomPruneBranch:
    """A random mask as sparse as the level's, on the ticket's weights at the rewind point."""

    # layerwise: the same count of weights in every layer; global: the same total count.
    scope: str = "layerwise"
    seed: int = 0


@dataclass
class LrRewindBranch:
    """The level's trained weights, pruned, retrained replaying the learning-rate schedule
    from ``step`` to the end (Renda et al. 2020); None: from ``pruning.rewind_step``."""

    step: str | None = None


@dataclass
class FinetuneBranch:
    """The level's trained weights, pruned, trained at the schedule's final learning rate
    for ``steps`` (None: as many steps as the level retrains) (Renda et al. 2020)."""

    steps: str | None = None


@dataclass
class RewindToBranch:
    """The level's mask on the weights of other rewind points k, one series per k."""

    steps: list[str] = field(default_factory=lambda: ["0it"])


@dataclass
class InstabilityBranch:
    """A second copy of the level trained from the same start on another data order; test
    error along the straight line between the two (Frankle et al. 2020)."""

    points: int = 30
    # The second copy's data seed, beside the replicate's own.
    data_seed: int = 1
    # BatchNorm statistics along the line: interpolate (linearly, like the weights: Frankle et
    # al. 2020's procedure), recompute (re-estimated at each point on recompute_batches fixed
    # training batches, as reset_bn_stats in later work, e.g. Jordan et al. 2022), or both
    # (instability_barrier is interpolate's; instability_barrier_recompute beside it).
    batchnorm: str = "interpolate"
    # recompute, both: how many training batches (of train.batch_size) the statistics are
    # re-estimated on, a step ("1ep": one epoch, as reset_bn_stats; "100it": 100 batches).
    recompute_batches: str = "1ep"


@dataclass
class SmallDenseBranch:
    """A dense network narrowed to the level's nonzero count, trained from scratch (Zhu &
    Gupta 2017's small-dense baseline)."""

    seed: int = 0


@dataclass
class BranchConfig:
    """The arguments of each branch; which ones run is ``branches``."""

    random_reinit: RandomReinitBranch = field(default_factory=RandomReinitBranch)
    random_prune: RandomPruneBranch = field(default_factory=RandomPruneBranch)
    lr_rewind: LrRewindBranch = field(default_factory=LrRewindBranch)
    finetune: FinetuneBranch = field(default_factory=FinetuneBranch)
    rewind_to: RewindToBranch = field(default_factory=RewindToBranch)
    instability: InstabilityBranch = field(default_factory=InstabilityBranch)
    small_dense: SmallDenseBranch = field(default_factory=SmallDenseBranch)
    # A branch of your own (``branches=[package.module:NAME]`` or an entry point): its
    # arguments by its name, ``+branch.own.<name>.<key>=...``, typed by its ``arguments``.
    own: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The whole experiment."""

    name: str = "mnist1d_imp"
    # The replicate: initialisation, and the data order unless ``data_seed`` is set.
    seed: int = 0
    # Seed of the batch order and augmentation; None: the same as ``seed``.
    data_seed: int | None = None
    results_root: str = "results"
    # Show a live progress bar (rich); off in non-interactive logs if you prefer.
    progress: bool = True
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # Extra trainings from each pruned level's mask (controls, rewinding variants), by name:
    # random_reinit, random_prune, lr_rewind, finetune, rewind_to, instability, small_dense.
    # Not in the experiment hash: each branch has its own folder inside the level.
    branches: list[str] = field(default_factory=list)
    branch: BranchConfig = field(default_factory=BranchConfig)


def register() -> None:
    """Put the schema into Hydra's ConfigStore as ``lottery_schema``."""
    ConfigStore.instance().store(name="lottery_schema", node=Config)
