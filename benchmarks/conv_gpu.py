"""Convolutional networks on a GPU: train steps per second as a level runs them.

The CIFAR presets' networks (ResNet-20 and VGG-16 at batch 128, Conv-2/4/6 at batch 60) on
CIFAR-10-shaped random data held on the device, trained as ``DeviceFeed`` trains them:
``--fused`` steps per compiled call (a ``lax.scan``; batches gathered by index inside it),
each step as the preset's (``step=preset``: SGD with momentum and random crop and flip for
ResNet-20 and VGG-16, Adam without augmentation for Conv-2/4/6). Masked means a random half
of every weight tensor pruned (every IMP level after the first).

Rows per network: ``model.kernels=auto`` (what ``python -m lottery`` runs; on a GPU that is
the kernels of :mod:`lottery.kernels.layers` around XLA's convolutions), masked and
dense, and the projected training time of one level of the preset at that rate. For
ResNet-20 and Conv-4 also: ``kernels=xla`` (Flax's Conv, BatchNorm and max-pool, what
``auto`` was on a GPU before those kernels were measured there), one step per call
(unfused), and, with ``--torch-python``, PyTorch eager on the same GPU
(``conv_cpu_torch.py --device cuda``) beside ours with the same step as its
(``step=pytorch``: SGD 0.1 with momentum, crop and flip; on random data Conv-4's loss
diverges under it, which changes no speed).

What it measured on an H200, with the versions and the date: docs/benchmarks.md, "On a GPU".

Rates are the median of ``--repeats`` stretches of ``--calls`` calls after a warm-up call
that compiles. Data loading is not included: a real level adds its evaluations and, for
CIFAR-10, nothing else (the dataset sits on the device).

    python benchmarks/conv_gpu.py [--torch-python python3] [--cases resnet20,conv4]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path

from common import cifar_network, parser, report

HERE = Path(__file__).resolve().parent
# name: (batch size, iterations per level, optimizer, augmentation), as the presets train
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
CASES = {
    "resnet20": (128, 63_000, SGD, True),
    "vgg16": (128, 63_000, SGD, True),
    "conv2": (60, 20_000, {"name": "adam", "lr": 2e-4}, False),
    "conv4": (60, 25_000, {"name": "adam", "lr": 3e-4}, False),
    "conv6": (60, 30_000, {"name": "adam", "lr": 3e-4}, False),
}
COMPARED = ("resnet20", "conv4")  # the networks with the extra rows (and PyTorch's)


def steps_per_second(
    case: str, kernels: str, masked: bool, step: str, fused: int, calls: int, repeats: int,
    examples: int,
) -> dict:
    """Ours: steps/s of ``train_steps`` fusing ``fused`` steps per call, and compile time."""
    import jax

    from lottery.config import OptimizerConfig
    from lottery.data.augment import crop_flip
    from lottery.train.optim import make_optimizer, make_schedule
    from lottery.train.state import TrainState
    from lottery.train.steps import make_train_steps

    batch, level_steps, optimizer, augment = CASES[case]
    if step == "pytorch":  # conv_cpu_torch.py's step
        optimizer, augment = SGD, True
    network, params, stats, mask = cifar_network(case, kernels, masked)
    opt = OptimizerConfig(**optimizer)
    tx = make_optimizer(opt)
    train_steps = make_train_steps(network, tx, make_schedule(opt, 390, level_steps),
                                   crop_flip if augment else None)
    x_all = jax.random.normal(jax.random.key(1), (examples, 32, 32, 3))
    y_all = jax.random.randint(jax.random.key(2), (examples,), 0, 10)
    total = fused * (1 + calls * repeats)
    order = jax.random.randint(jax.random.key(3), (total, batch), 0, examples)
    key = jax.random.key(4)
    state = TrainState.create(0, params, stats, tx)
    begin = time.perf_counter()
    state, loss = train_steps(state, mask, x_all, y_all, order, key, num_steps=fused)
    loss.block_until_ready()
    compile_s = time.perf_counter() - begin
    rates = []
    for _ in range(repeats):
        begin = time.perf_counter()
        for _ in range(calls):
            state, loss = train_steps(state, mask, x_all, y_all, order, key, num_steps=fused)
        loss.block_until_ready()
        rates.append(fused * calls / (time.perf_counter() - begin))
    rate = statistics.median(rates)
    return {"case": case, "kernels": kernels, "masked": masked, "step": step, "fused": fused,
            "steps_per_s": rate, "spread": f"{min(rates):.1f}-{max(rates):.1f}",
            "compile_s": compile_s, "level_min": level_steps / rate / 60,
            "loss": float(loss),
            "device": str(jax.devices()[0].device_kind)}


def run_torch(python: str, case: str, steps: int, repeats: int) -> list[dict]:
    command = [python, str(HERE / "conv_cpu_torch.py"), "--cases", case, "--steps", str(steps),
               "--repeats", str(repeats), "--device", "cuda"]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"PyTorch on {case} failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [{"case": case, "kernels": f"pytorch eager {row['torch']}", "masked": row["masked"],
             "step": "pytorch", "fused": 1, "steps_per_s": row["steps_per_s"],
             "spread": f"{min(row['rates']):.1f}-{max(row['rates']):.1f}",
             "level_min": CASES[case][1] / row["steps_per_s"] / 60} for row in rows]


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--torch-python", help="a Python with PyTorch and CUDA")
    args.add_argument("--cases", default=",".join(CASES))
    args.add_argument("--fused", type=int, default=100, help="steps per compiled call")
    args.add_argument("--calls", type=int, default=5)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--examples", type=int, default=50_000, help="training set size")
    opts = args.parse_args()
    measure = {"fused": opts.fused, "calls": opts.calls, "repeats": opts.repeats,
               "examples": opts.examples}
    cases = opts.cases.split(",")
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise SystemExit(f"unknown --cases {','.join(unknown)}; choose from {','.join(CASES)}")
    rows = []
    for case in cases:
        todo = [("auto", True, "preset", opts.fused), ("auto", False, "preset", opts.fused)]
        if case in COMPARED:
            todo += [("xla", True, "preset", opts.fused), ("auto", True, "preset", 1)]
            if opts.torch_python and not CASES[case][3]:  # the preset's step is not PyTorch's
                todo += [("auto", m, "pytorch", opts.fused) for m in (True, False)]
        for kernels, masked, step, fused in todo:
            # As many steps per stretch unfused as fused.
            calls = opts.calls * opts.fused // fused
            row = steps_per_second(case, kernels, masked, step,
                                   **{**measure, "fused": fused, "calls": calls})
            print(json.dumps(row), flush=True)
            rows.append(row)
        if opts.torch_python and case in COMPARED:
            rows += run_torch(opts.torch_python, case, opts.fused, opts.repeats)
            print(json.dumps(rows[-2:]), flush=True)
    report("Train steps per second on this accelerator, as a level runs them",
           ["case", "kernels", "masked", "step", "fused", "steps_per_s", "spread", "compile_s",
            "level_min", "loss", "device"], rows, {}, opts.json)


if __name__ == "__main__":
    main()
