"""The families of pruning at one sparsity: IMP, one-shot, gradual, SNIP, SynFlow (and more).

LeNet-300-100 on Fashion-MNIST (Debian's IDX files), all with the same training (Adam 1.2e-3,
batch 60, Glorot init; ``--steps`` iterations, 10,000 by default) and the same final share of
kernel weights: IMP's after ``--levels`` levels of 20% (10 levels: 10.74%). IMP gets there in
``--levels`` trainings, the others in one: one-shot magnitude pruning of the trained dense
network, gradual pruning inside the training (tfmot's schedule from 20% to 70% of training),
and the at-initialisation methods. The dense network is trained once and shared (the store's
level 0). Prints test accuracy at the end of training and at the early-stopping iteration.

A method is written ``NAME[+erk][@SPARSITY]``: ``+erk`` gives each layer its Erdős–Rényi-Kernel
share (``pruning.distribution=erk``), ``@0.75`` another sparsity than IMP's. The dynamic
sparse methods (``set``, ``rigl``) train at the fixed sparsity from the start, updating every
100 iterations until 75% of training (RigL's ΔT and T_end) with drop fraction 0.3; ``nmN:M``
is N:M sparsity (``nm2:4``: 50%), one shot from the dense network, at its own sparsity (the
layers' 784, 300 and 100 inputs allow M = 2 or 4): compare it with ``oneshot@`` that sparsity.

    python benchmarks/families.py [--methods imp,oneshot,gradual,snip,synflow] [--seeds 0,1,2]
    python benchmarks/families.py --methods set,rigl,rigl+erk,nm1:4,oneshot@0.75
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import parser, report

TRAINING = [  # lenet_fashion_imp's training, global pruning
    "dataset=fashion_mnist_idx", "model=lenet_300_100", "model.init=glorot_normal",
    "optimizer=adam", "optimizer.lr=1.2e-3", "train.batch_size=60", "train.eval_every=500it",
    "progress=false", "branches=[]",
]


def final_share(fraction: float, levels: int, total: int) -> int:
    """Weights IMP keeps after ``levels`` levels of ``fraction`` (exact, as it prunes)."""
    from lottery.pruning import prune_count

    alive = total
    for _ in range(levels):
        alive -= prune_count(fraction, alive)
    return alive


def parse_method(spec: str, sparsity: float) -> tuple[str, list[str], float]:
    """``NAME[+erk][@SPARSITY]`` -> (name, its distribution override, its sparsity)."""
    spec, _, at = spec.partition("@")
    name, _, distribution = spec.partition("+")
    extra = [f"pruning.distribution={distribution}"] if distribution else []
    return name, extra, float(at) if at else sparsity


def overrides_for(spec: str, sparsity: float, steps: int, levels: int) -> list[str]:
    method, extra, sparsity = parse_method(spec, sparsity)
    if method == "imp":
        return [f"pruning.levels={levels}"]
    if method.startswith("nm"):
        n, m = method[2:].split(":")
        return ["pruning.method=nm", "pruning.levels=1", f"pruning.nm_n={n}", f"pruning.nm_m={m}"]
    if method in ("set", "rigl"):
        return [
            f"pruning.method={method}", "pruning.levels=1", f"pruning.final_sparsity={sparsity}",
            "pruning.frequency=100it", f"pruning.end_step={3 * steps // 4}it", *extra,
        ]
    if method == "gradual":
        return [
            "pruning.method=gradual", "pruning.levels=1", f"pruning.final_sparsity={sparsity}",
            f"pruning.begin_step={steps // 5}it", f"pruning.end_step={7 * steps // 10}it",
        ]
    return [
        f"pruning.method={method}", "pruning.levels=1", f"pruning.fraction={sparsity}", *extra
    ]


def main() -> None:
    from lottery import experiment

    from conftest import make_config

    args = parser(__doc__.splitlines()[0])
    args.add_argument("--methods", default="imp,oneshot,gradual,snip,synflow")
    args.add_argument("--seeds", default="0")
    args.add_argument("--steps", type=int, default=10_000)
    args.add_argument("--levels", type=int, default=10)
    args.add_argument("--results", type=Path, default=None)
    opts = args.parse_args()
    root = opts.results or Path(tempfile.mkdtemp(prefix="families-"))
    total = 266_200  # LeNet-300-100's kernel weights
    alive = final_share(0.2, opts.levels, total)
    sparsity = round(1 - alive / total, 6)
    rows = []
    for method in opts.methods.split(","):
        finals, early, pct, seconds = [], [], [], []
        for seed in [int(s) for s in opts.seeds.split(",")]:
            method_overrides = overrides_for(method, sparsity, opts.steps, opts.levels)
            run_overrides = [f"train.steps={opts.steps}it", f"seed={seed}", "name=families"]
            cfg = make_config([*TRAINING, *run_overrides, *method_overrides], root)
            begin = time.perf_counter()
            _, curve = experiment.run(cfg)
            seconds.append(time.perf_counter() - begin)
            last = [r for r in curve if r["replicate"] == seed and r["branch"] == "imp"][-1]
            finals.append(100 * float(last["test_accuracy"]))
            early.append(100 * float(last["early_stop_test_accuracy"]))
            pct.append(float(last["weights_remaining_pct"]))
        rows.append({
            "method": method,
            "weights %": statistics.mean(pct),
            "test acc %": statistics.mean(finals),
            "± std": statistics.pstdev(finals),
            "at early stop %": statistics.mean(early),
            "seeds": len(finals),
            "wall s": statistics.median(seconds),
        })
    report(
        f"LeNet-300-100 / Fashion-MNIST, {opts.steps:,} iterations, "
        f"{100 * alive / total:.2f}% of kernel weights left",
        ["method", "weights %", "test acc %", "± std", "at early stop %", "seeds", "wall s"],
        rows,
        {"results": str(root)},
        opts.json,
    )


if __name__ == "__main__":
    main()
