"""Seconds for one IMP level, split into compile, train, eval, prune and store.

Cases: (a) LeNet-300-100 at OpenLTH's defaults (preset ``lenet_openlth``), (b) Frankle &
Carbin's LeNet setting (``lenet_fashion_imp``), (c) the default MNIST-1D experiment,
(d) ResNet-20 on CIFAR-10-shaped data (random arrays when CIFAR-10 is not prepared; the full
63,000-step level is projected from a measured stretch of steps on a CPU).

Each case runs level 0 (which compiles) and then ``--repeats`` more levels, which reuse the
compiled code; the table gives the compile time and the median of the later levels. The
default experiment is also timed end to end from the command line, and rerun.

    python benchmarks/level_time.py [--cases a,b,c,d] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, median, parser, report

CASES = {
    "a": ("LeNet-300-100, OpenLTH defaults", ["+experiment=lenet_openlth"]),
    "b": ("LeNet-300-100, Frankle & Carbin", ["+experiment=lenet_fashion_imp"]),
    "c": ("MNIST-1D MLP (default)", []),
    "d": ("ResNet-20, CIFAR-10 shape", []),  # timed by resnet_projection
}


def time_levels(overrides: list[str], repeats: int, root: Path) -> list[dict]:
    """Run level 0 and ``repeats`` more levels; return each level's timing."""
    from lottery.experiment import run as run_experiment

    from conftest import make_config

    cfg = make_config([*overrides, f"pruning.levels={repeats}", "progress=false"], root)
    store, rows = run_experiment(cfg)
    replicate = store.replicate(cfg.seed)
    return [replicate.summary(row["level"])["timing"] for row in rows]


def resnet_projection(steps: int) -> dict:
    """ResNet-20 steps/s on random CIFAR-10-shaped data, and the projected 63,000-step level."""
    import jax
    import numpy as np

    from lottery.config import ModelConfig, OptimizerConfig
    from lottery.data import Dataset, Split
    from lottery.data.augment import crop_flip
    from lottery.models import build
    from lottery.pruning import full_mask
    from lottery.train import Trainer

    rng = np.random.default_rng(0)
    split = Split(rng.normal(size=(5000, 32, 32, 3)).astype(np.float32),
                  rng.integers(0, 10, 5000).astype(np.int32))
    dataset = Dataset("random_cifar10", split, Split(split.x[:0], split.y[:0]),
                      Split(split.x[:1000], split.y[:1000]), 10)
    network = build(ModelConfig(name="resnet20"), (32, 32, 3), 10)
    params, stats = network.init(jax.random.key(0))
    trainer = Trainer(network, dataset, OptimizerConfig(name="sgd", lr=0.1, momentum=0.9,
                                                        weight_decay=1e-4),
                      batch_size=128, total_steps=steps, steps_per_epoch=39,
                      eval_batch_size=500, data_seed=0, augment=crop_flip)
    trainer.train(trainer.start(0, params, stats, full_mask(params)), steps)
    steps_per_second = steps / trainer.timing.train
    return {"case": "d", "what": CASES["d"][0] + f" ({steps} steps measured)",
            "compile_s": trainer.timing.compile, "train_s": 63_000 / steps_per_second,
            "steps_per_s": steps_per_second, "level_s": 63_000 / steps_per_second,
            "note": "projected to 63,000 steps"}


def default_end_to_end() -> dict:
    """``python -m lottery`` from scratch (11 levels) and again (nothing to do)."""
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "lottery", f"results_root={root}", "progress=false"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        times = []
        for _ in range(2):
            begin = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env, cwd=REPO)
            times.append(time.perf_counter() - begin)
    return {"default_experiment_11_levels_s": times[0], "rerun_finished_experiment_s": times[1]}


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--cases", default="a,b,c,d")
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--resnet-steps", type=int, default=20)
    args.add_argument("--no-end-to-end", action="store_true")
    args.add_argument("--checkpoint-every", default=None,
                      help="train.checkpoint_every for cases a-c (default: the config's, 5min)")
    opts = args.parse_args()
    extra_overrides = (
        [f"train.checkpoint_every={opts.checkpoint_every}"] if opts.checkpoint_every else []
    )
    rows = []
    for case in opts.cases.split(","):
        what, overrides = CASES[case]
        if case == "d":
            rows.append(resnet_projection(opts.resnet_steps))
            continue
        with tempfile.TemporaryDirectory() as root:
            timings = time_levels([*overrides, *extra_overrides], opts.repeats, Path(root))
        later = timings[1:]
        row = {"case": case, "what": what, "compile_s": timings[0]["compile"]}
        for key in ("train", "eval", "prune", "checkpoint", "store", "wall"):
            row[f"{key}_s"] = median([t[key] for t in later])
        row["steps_per_s"] = median([t["steps_per_second"] for t in later])
        row["level_s"] = row["wall_s"]
        row["checkpoints"] = median([t["checkpoints"] for t in later])
        row["compile_after_level_0_s"] = sum(t["compile"] for t in later)
        rows.append(row)
    extra: dict = {}  # OpenLTH side by side: benchmarks/openlth.py (measured, never quoted)
    if not opts.no_end_to_end and "c" in opts.cases:
        extra.update(default_end_to_end())
    report("Seconds per IMP level (median of the levels after level 0)",
           ["case", "what", "compile_s", "train_s", "eval_s", "prune_s", "checkpoint_s",
            "checkpoints", "store_s", "level_s", "steps_per_s", "compile_after_level_0_s"],
           rows, extra, opts.json)


if __name__ == "__main__":
    main()
