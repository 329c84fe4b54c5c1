"""Steps per second of the masked train step against the same step without masks.

For LeNet-300-100 (SGD, batch 128), Conv-4 (Adam, batch 60) and ResNet-20 (SGD with
momentum and weight decay, batch 128, on-device augmentation), on random data of each
model's input shape. Masked and dense runs alternate; the table gives medians.

    python benchmarks/step_overhead.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import time

from common import median, parser, report

MODELS = {
    "lenet_300_100": ((28, 28, 1), 128, dict(name="sgd", lr=0.1), 500, False),
    "conv4": ((32, 32, 3), 60, dict(name="adam", lr=3e-4), 5, False),
    "resnet20": ((32, 32, 3), 128, dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
                 5, True),
}


def measure(name: str, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lottery.config import ModelConfig, OptimizerConfig
    from lottery.data import batch_order
    from lottery.models import build
    from lottery.pruning import flatten, unflatten
    from lottery.train import TrainState, make_optimizer, make_schedule, make_train_steps
    from lottery.train.steps import fused_steps_limit

    shape, batch, optimizer, steps, augment = MODELS[name]
    rng = np.random.default_rng(0)
    n = batch * 8
    x = jnp.asarray(rng.normal(size=(n, *shape)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    network = build(ModelConfig(name=name), shape, 10)
    params, stats = network.init(jax.random.key(0))
    mask = unflatten({p: jnp.asarray(rng.random(np.shape(v)) < 0.5 if p.endswith("kernel")
                                     else np.ones(np.shape(v), bool))
                      for p, v in flatten(params).items()})
    opt_cfg = OptimizerConfig(**optimizer)
    tx = make_optimizer(opt_cfg)
    aug = None
    if augment:
        from lottery.data.augment import crop_flip as aug
    train_steps = make_train_steps(network, tx, make_schedule(opt_cfg, 8, 10**6), aug)
    order = jnp.asarray(batch_order(0, n, batch, steps * (2 * repeats + 2)))
    key = jax.random.key(0)
    # As the trainer does: fused in one scan, or one step per call (conv nets on a CPU).
    per_call = fused_steps_limit(params) or steps
    compiled, rates = {}, {"masked": [], "dense": []}
    for kind, m in (("masked", mask), ("dense", None)):
        state = TrainState.create(0, params, stats, tx)
        compiled[kind] = train_steps.lower(state, m, x, y, order, key,
                                           num_steps=per_call).compile()

    def run(kind, m, state):
        for _ in range(steps // per_call):
            state, loss = compiled[kind](state, m, x, y, order, key)
        float(loss)
        return state

    for _ in range(repeats):
        for kind, m in (("masked", mask), ("dense", None)):
            state = run(kind, m, TrainState.create(0, params, stats, tx))  # warm
            begin = time.perf_counter()
            run(kind, m, state)
            rates[kind].append(steps / (time.perf_counter() - begin))
    masked, dense = median(rates["masked"]), median(rates["dense"])
    return {"model": name, "batch": batch, "steps_per_call": per_call,
            "masked_steps_per_s": masked,
            "dense_steps_per_s": dense, "masked_over_dense_time": dense / masked}


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--repeats", type=int, default=5)
    args.add_argument("--models", default=",".join(MODELS))
    opts = args.parse_args()
    rows = [measure(name, opts.repeats) for name in opts.models.split(",")]
    report("Masked vs dense train step (time ratio: masked/dense, 1.00 = free)",
           ["model", "batch", "steps_per_call", "masked_steps_per_s", "dense_steps_per_s",
            "masked_over_dense_time"],
           rows, {}, opts.json)


if __name__ == "__main__":
    main()
