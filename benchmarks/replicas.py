"""Throughput of ``train.replicas=N`` against N runs one after the other.

For the default experiment's MNIST-1D MLP (batch 100, Adam) and LeNet-300-100 on
Fashion-MNIST (batch 60, Adam, the lenet_fashion_imp preset), N = 1, 2, 4, 8: N trainers of
the real driver (one per seed) train ``--steps`` steps each, stopping every 100 steps as the
presets' evaluations do, either one after the other or as ``train.replicas=N`` trains them:
through the :class:`ReplicaBatcher` (one thread per seed; on a CPU each device runs its
replicas' own steps, the default, or one vmapped step, as on a GPU), or one after another
on a single CPU device, where nothing would run at once. Each configuration runs in a fresh
process with 1 and with 2 CPU devices (``--xla_force_host_platform_device_count``); medians
of ``--repeats`` timings after a compiling warm-up.

    python benchmarks/replicas.py [--steps 1000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from common import REPO, median, parser, report

CASES = {
    "mnist1d_mlp": [],
    "lenet_300_100": ["+experiment=lenet_fashion_imp"],
}
COUNTS = (1, 2, 4, 8)
STOP_EVERY = 100  # the presets' evaluation cadence: the loop stops there anyway


def measure(case: str, count: int, steps: int, repeats: int, vmap: bool) -> dict:
    """In this process: steps per second of ``count`` seeds, one after the other and together
    (vmapped per device, or each replica's own steps per device)."""
    from lottery.experiment import Experiment, prepare
    from lottery.experiment.plan import with_seed
    from lottery.experiment.replicas import replica_experiments
    from lottery.pruning import full_mask
    from lottery.train import AtSteps, replicas
    from lottery.train.replicas import ReplicaBatcher

    from conftest import make_config

    plan = prepare(make_config([*CASES[case], "progress=false", "branches=[]",
                                f"train.replicas={count}"]))
    stops = AtSteps(range(0, steps + 1, STOP_EVERY), lambda run: None)

    def trainers(batcher: ReplicaBatcher | None) -> list:
        if batcher is None:  # one after the other: each as a run of its own would be
            return [Experiment(with_seed(plan, seed)).trainer for seed in range(count)]
        return [experiment.trainer for experiment in replica_experiments(plan, batcher)]

    def train(trainer, seed: int) -> None:
        replica = with_seed(plan, seed)
        params = replica.init_params
        run = trainer.start(0, params, replica.init_batch_stats, full_mask(params))
        trainer.train(run, steps, [stops])
        float(run.state.step)  # wait for the device

    def one_after_another(group: list) -> float:
        begin = time.perf_counter()
        for seed, trainer in enumerate(group):
            train(trainer, seed)
        return time.perf_counter() - begin

    def together(group: list) -> float:
        if batcher is None:  # one CPU device: the seeds train one after another anyway
            return one_after_another(group)
        batcher.start_round(count)  # every replica takes part again

        def work(seed: int, trainer) -> None:
            try:
                train(trainer, seed)
            finally:
                batcher.leave()

        threads = [threading.Thread(target=work, args=(s, t)) for s, t in enumerate(group)]
        begin = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - begin

    sequential_group = trainers(None)
    replicas.VMAP_ON_CPU = vmap
    batcher = ReplicaBatcher(count) if replicas.worth_batching() else None
    replica_group = trainers(batcher) if batcher is not None else sequential_group
    one_after_another(sequential_group)  # compile
    together(replica_group)
    sequential, replicated = [], []
    for _ in range(repeats):
        sequential.append(one_after_another(sequential_group))
        replicated.append(together(replica_group))
    work = count * steps
    seq_rate, rep_rate = work / median(sequential), work / median(replicated)
    return {"seq_steps_per_s": seq_rate, "rep_steps_per_s": rep_rate,
            "speedup": rep_rate / seq_rate}


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--steps", type=int, default=1000)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--inner", help=argparse_hidden())
    opts = args.parse_args()
    if opts.inner:  # one measurement, in a process with its own device count
        case, count, vmap = opts.inner.split(":")
        print(json.dumps(measure(case, int(count), opts.steps, opts.repeats, vmap == "vmap")))
        return
    rows = []
    for devices in (1, 2):
        env = {**os.environ,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        for case in CASES:
            # The default on a CPU (each device runs its replicas' own steps), and the
            # vmapped step that GPUs use, for comparison.
            runs = [(count, "own") for count in COUNTS] + [(COUNTS[-1], "vmap")]
            for count, mode in runs:
                out = subprocess.run(
                    [sys.executable, __file__, "--inner", f"{case}:{count}:{mode}",
                     "--steps", str(opts.steps), "--repeats", str(opts.repeats)],
                    env=env, cwd=REPO, check=True, capture_output=True, text=True,
                ).stdout
                figures = json.loads(out.strip().splitlines()[-1])
                rows.append({"model": case, "devices": devices, "replicas": count,
                             "per device": "vmapped" if mode == "vmap" else "own steps",
                             **figures})
                print(rows[-1], flush=True)
    columns = ["model", "devices", "replicas", "per device", "seq_steps_per_s",
               "rep_steps_per_s", "speedup"]
    report("train.replicas=N against N runs one after the other (steps/s, all seeds)",
           columns, rows, {"steps": opts.steps, "repeats": opts.repeats}, opts.json)


def argparse_hidden() -> str:
    return "internal: CASE:COUNT, measured in this process"


if __name__ == "__main__":
    main()
