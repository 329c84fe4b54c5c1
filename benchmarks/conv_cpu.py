"""Convolutional networks on a CPU: train steps per second, ours against PyTorch eager.

ResNet-20 (batch 128) and Conv-4 (batch 60) on CIFAR-10-shaped data: one step is random crop
and flip, forward, cross-entropy, backward and SGD with momentum (weight decay 1e-4), dense
(no mask) and masked (a random half of every weight tensor pruned). Rows:

- ``lottery``: what ``python -m lottery`` runs on a CPU: Eigen convolutions
  (:mod:`lottery.kernels.xla_cpu`), ``model.kernels=auto`` which is ``cpu`` here (see
  :mod:`lottery.kernels.layers`), and malloc's huge pages (:mod:`lottery.kernels.huge_pages`,
  where the machine has them);
- ``lottery, 4 KB pages``: the same without the huge pages (what ``import lottery`` in a
  process started without ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` gets);
- ``lottery kernels=xla``: ``model.kernels=xla``, Flax's own Conv and BatchNorm;
- ``lottery kernels=xla, YNNPACK convs``: also XLA's default convolutions (what the package
  did before it set its XLA flag);
- ``pytorch eager``: the same networks and step in PyTorch (``conv_cpu_torch.py``), if a
  Python with PyTorch is given, as installed; and ``pytorch eager, huge pages``: the same
  with the same malloc setting as ours, so that the comparison does not rest on it.

Each row runs in a process of its own (XLA reads its flags, glibc its tunables, once per
process): ``--repeats`` stretches of ``--steps`` steps after two warm-up steps. The rows
take turns, PyTorch's and ours, for ``--rounds`` rounds, so that the machine's drift (on a
shared VM a row's speed moves over minutes: docs/benchmarks.md) falls on all of them; the
median steps/s over every round's stretches is printed with the ratios to both PyTorch
rows, the spread (min-max) and the minor page faults per step (the cost that huge pages
remove). For ``lottery`` it also prints where a step's time goes, every part timed in turn
within each of ``2 * repeats + 1`` rounds (medians): the step; forward (train mode);
backward (forward+backward less forward); augmentation and update (step less
forward+backward); the convolutions alone (every layer's forward, input gradient and kernel
gradient in one program of their own, with their layout transposes); and the step less
the convolutions (BatchNorm, ReLU, pooling, the loss, augmentation, update; the convolutions
alone are not those inside the step, so where they are nearly all of it this reads close to
0, even below). Run it with nothing else computing.

PyTorch is never a dependency of ``lottery``. To compare with it:

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy   # the CPU build
    python benchmarks/conv_cpu.py --torch-python /tmp/torch/bin/python
"""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lottery.kernels import huge_pages

from common import cifar_network, parser, report

HERE = Path(__file__).resolve().parent
CASES = {"resnet20": 128, "conv4": 60}
YNN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
# name: (model.kernels, XLA_FLAGS, malloc's huge pages)
VARIANTS = {
    "lottery": ("auto", None, True),
    "lottery, 4 KB pages": ("auto", None, False),
    "lottery kernels=xla": ("xla", None, True),
    "lottery kernels=xla, YNNPACK convs": ("xla", YNN_CONVOLUTIONS, True),
}
TORCH_ROWS = {"pytorch eager": False, "pytorch eager, huge pages": True}


def malloc_environment(huge: bool) -> dict[str, str]:
    """This process's environment with malloc's huge pages as the command sets them
    (:mod:`lottery.kernels.huge_pages`, where the machine has them), or without."""
    env = dict(os.environ)
    kept = [t for t in env.pop("GLIBC_TUNABLES", "").split(":")
            if t and not t.startswith(huge_pages.TUNABLE)]
    if kept:
        env["GLIBC_TUNABLES"] = ":".join(kept)
    if huge:
        env = huge_pages.environment_here(env) or env
    return env


def convolutions_only(network, batch: int):
    """A function computing, in one program, what every convolution of ``network`` computes
    in a train step: its forward, input gradient (but the first's, whose input is the data)
    and kernel gradient at its shape in the network (with the network's kernels, which each
    recorded ``nn.Conv`` carries), and nothing else but a sum per layer."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    layers = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, nn.Conv):
            layers.append((context.module.clone(parent=None), args[0].shape))
        return next_fun(*args, **kwargs)

    x = jnp.zeros((batch, 32, 32, 3))
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: network.module.init(jax.random.key(0), x, train=True))
    inputs = [jnp.ones(shape) for _, shape in layers]
    variables = [module.init(jax.random.key(0), x)
                 for (module, _), x in zip(layers, inputs, strict=True)]

    def loss(variables, inputs):
        # The first convolution reads the data: a train step takes no input gradient there.
        inputs = [jax.lax.stop_gradient(inputs[0]), *inputs[1:]]
        return sum(jnp.sum(module.apply(v, x) ** 2)
                   for (module, _), v, x in zip(layers, variables, inputs, strict=True))

    gradients = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(gradients(variables, inputs))
    return functools.partial(gradients, variables, inputs)


def elapsed(function, *args) -> float:
    """Seconds that ``function(*args)`` takes, until its result is ready."""
    import jax

    begin = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - begin


def worker(
    case: str, kernels: str, masked: bool, steps: int, repeats: int, breakdown: bool
) -> dict:
    """Ours, in this process: steps/s of the jitted train step and where its time goes."""
    import jax
    import optax

    import lottery  # noqa: F401  (sets the XLA flag before JAX starts)
    from lottery.config import OptimizerConfig
    from lottery.data.augment import crop_flip
    from lottery.train.optim import make_optimizer, make_schedule
    from lottery.train.state import TrainState
    from lottery.train.steps import make_step

    batch = CASES[case]
    network, params, stats, mask = cifar_network(case, kernels, masked)
    opt = OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    tx = make_optimizer(opt)
    step = jax.jit(make_step(network, tx, make_schedule(opt, 390, 63_000), crop_flip),
                   donate_argnums=0)
    state = TrainState.create(0, params, stats, tx)
    x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
    key = jax.random.key(3)
    begin = time.perf_counter()
    state, loss = step(state, mask, x, y, key)
    loss.block_until_ready()
    compile_s = time.perf_counter() - begin
    state, loss = step(state, mask, x, y, key)
    loss.block_until_ready()
    rates = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        begin = time.perf_counter()
        for _ in range(steps):
            state, loss = step(state, mask, x, y, key)
        loss.block_until_ready()
        rates.append(steps / (time.perf_counter() - begin))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    row = {"steps_per_s": statistics.median(rates), "rates": rates, "compile_s": compile_s,
           "faults_per_step": faults / (steps * repeats),
           "cpu_kernels": network.kernels == "cpu", "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if masked or not breakdown:
        return row

    def objective(params, stats, x):
        logits, new_stats = network.apply(params, stats, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_stats

    forward = jax.jit(objective)
    backward = jax.jit(jax.value_and_grad(objective, has_aux=True))
    params, stats = state.params, state.batch_stats
    jax.block_until_ready(forward(params, stats, x))
    jax.block_until_ready(backward(params, stats, x))
    convolutions = convolutions_only(network, batch)
    # Every part is timed in each round, one after another, so that the machine's drift
    # falls on all of them alike; a part measured at another time than the step would make
    # the differences below meaningless.
    times: dict[str, list[float]] = {"step": [], "forward": [], "both": [], "convolutions": []}
    for _ in range(2 * repeats + 1):
        begin = time.perf_counter()
        state, loss = step(state, mask, x, y, key)
        loss.block_until_ready()
        times["step"].append(time.perf_counter() - begin)
        params, stats = state.params, state.batch_stats  # the step donated the last ones
        times["forward"].append(elapsed(forward, params, stats, x))
        times["both"].append(elapsed(backward, params, stats, x))
        times["convolutions"].append(elapsed(convolutions))
    ms = {part: 1e3 * statistics.median(values) for part, values in times.items()}
    row.update(step_ms=ms["step"], forward_ms=ms["forward"],
               backward_ms=ms["both"] - ms["forward"],
               augment_and_update_ms=ms["step"] - ms["both"],
               convolutions_ms=ms["convolutions"],
               step_less_convolutions_ms=ms["step"] - ms["convolutions"])
    return row


def run_worker(
    case: str, variant: str, masked: bool, steps: int, repeats: int, breakdown: bool
) -> dict:
    kernels, flags, huge = VARIANTS[variant]
    env = {k: v for k, v in malloc_environment(huge).items() if k != "XLA_FLAGS"}
    if flags:
        env["XLA_FLAGS"] = flags
    command = [sys.executable, __file__, "--worker", case, kernels, str(int(masked)),
               str(steps), str(repeats), str(int(breakdown))]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{variant} on {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_torch(
    python: str, case: str, steps: int, repeats: int, huge: bool
) -> dict[bool, dict]:
    command = [python, str(HERE / "conv_cpu_torch.py"), "--cases", case, "--steps", str(steps),
               "--repeats", str(repeats)]
    out = subprocess.run(command, env=malloc_environment(huge), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"PyTorch on {case} failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {row["masked"]: row for row in rows}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        case, kernels, masked, steps, repeats, breakdown = sys.argv[2:8]
        print(json.dumps(worker(case, kernels, bool(int(masked)), int(steps), int(repeats),
                                bool(int(breakdown)))))
        return
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--torch-python", help="a Python with PyTorch, to run PyTorch eager")
    args.add_argument("--cases", default=",".join(CASES))
    args.add_argument("--variants", default=";".join(VARIANTS),
                      help="which of our rows to run (separated by ';')")
    args.add_argument("--steps", type=int, default=10)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--rounds", type=int, default=3)
    opts = args.parse_args()
    rows, extra = [], {}
    variants = opts.variants.split(";")
    theirs = list(TORCH_ROWS) if opts.torch_python else []
    for case in opts.cases.split(","):
        rates: dict[tuple[bool, str], list[float]] = {}
        faults: dict[tuple[bool, str], list[float]] = {}
        compile_s: dict[tuple[bool, str], list[float]] = {}
        note = ""
        for turn in range(opts.rounds):
            for what in theirs:
                for masked, row in run_torch(opts.torch_python, case, opts.steps,
                                             opts.repeats, TORCH_ROWS[what]).items():
                    rates.setdefault((masked, what), []).extend(row["rates"])
                    faults.setdefault((masked, what), []).append(row["faults_per_step"])
                    note = f"torch {row['torch']}, {row['threads']} threads"
            for variant in variants:
                for masked in (False, True):
                    breakdown = turn == 0 and not masked and variant == "lottery"
                    ours = run_worker(case, variant, masked, opts.steps, opts.repeats,
                                      breakdown)
                    rates.setdefault((masked, variant), []).extend(ours["rates"])
                    faults.setdefault((masked, variant), []).append(ours["faults_per_step"])
                    compile_s.setdefault((masked, variant), []).append(ours["compile_s"])
                    if breakdown:
                        extra[f"{case} step breakdown (ms)"] = {
                            k: round(ours[k], 1) for k in
                            ("step_ms", "forward_ms", "backward_ms", "augment_and_update_ms",
                             "convolutions_ms", "step_less_convolutions_ms")}
        for masked in (False, True):
            medians = {what: statistics.median(rates[(masked, what)])
                       for what in theirs + variants}
            for what in theirs + variants:
                measured = rates[(masked, what)]
                rows.append({
                    "case": case, "masked": masked, "what": what, "steps_per_s": medians[what],
                    "spread": f"{min(measured):.2f}-{max(measured):.2f}",
                    **{f"vs {name}": medians[what] / medians[name] for name in theirs},
                    "faults_per_step": round(statistics.median(faults[(masked, what)])),
                    "compile_s": statistics.median(compile_s[(masked, what)])
                    if (masked, what) in compile_s else None,
                    "note": note if what in theirs else "",
                })
    report("Train steps per second on this CPU: ours against PyTorch eager",
           ["case", "masked", "what", "steps_per_s", "spread", *[f"vs {n}" for n in theirs],
            "faults_per_step", "compile_s", "note"], rows, extra, opts.json)


if __name__ == "__main__":
    main()
