"""Does sparsity make inference faster on this CPU? Dense against BCOO sparse products
(unstructured tickets) and against the compacted network (structured tickets).

LeNet-300-100 (28x28x1 inputs) with its kernels pruned by magnitude to each sparsity (random
weights: the speed does not depend on the values), run three ways at batch 1 and 256: the
masked network as it trains (dense products, zeros multiplied), the same weights with each
pruned Dense kernel as a ``jax.experimental.sparse`` BCOO matrix
(:func:`lottery.deploy.sparse_inference.sparse_forward`), and a structured ticket that keeps
the square root of the density of units per layer, compacted into a narrower dense network
(:func:`lottery.deploy.compact`; its own sparsity is the second column: the input pixels and
the classes are never pruned, so it is less sparse). Median of ``--repeats`` timed calls
each; prints the sparsity from which each way beats dense, if any.

    python benchmarks/sparse_inference.py [--repeats 50] [--json out.json]
"""

from __future__ import annotations

from common import parser, report

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
BATCHES = (1, 256)


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--repeats", type=int, default=50)
    opts = args.parse_args()

    import jax

    from lottery import models
    from lottery.config import ModelConfig
    from lottery.deploy import compact, inference_latency
    from lottery.deploy.latency import forward_latency
    from lottery.deploy.sparse_inference import sparse_forward
    from lottery.pruning import apply_mask, count_alive, full_mask, magnitude_prune, prunable_paths
    from lottery.pruning.structured import structured_prune

    network = models.build(ModelConfig(name="lenet_300_100"), (28, 28, 1), 10)
    params, stats = jax.device_get(network.init(jax.random.key(0)))
    prunable = prunable_paths(params, ".*kernel")
    total = count_alive(full_mask(params), prunable)
    dense = {b: inference_latency(network, params, stats, b, opts.repeats) for b in BATCHES}
    rows = []
    for sparsity in SPARSITIES:
        mask = magnitude_prune(params, full_mask(params), prunable, "layerwise", sparsity, {})
        masked = apply_mask(params, mask)
        forward = sparse_forward(network, masked, stats, mask)
        # A structured ticket of about the same size: units per layer kept ~ sqrt(density).
        units = 1 - (1 - sparsity) ** 0.5
        structured = structured_prune(params, full_mask(params), units, "layerwise", "l1")
        small, small_params, small_stats = compact(network, params, stats, structured)
        row = {"sparsity %": 100 * sparsity,
               "structured sparsity %":
                   100 * (1 - count_alive(structured, prunable) / total)}
        for b in BATCHES:
            row[f"dense b{b} ms"] = 1e3 * dense[b]
            row[f"bcoo b{b} ms"] = 1e3 * forward_latency(forward, network.input_shape, b,
                                                          opts.repeats)
            row[f"compacted b{b} ms"] = 1e3 * inference_latency(small, small_params,
                                                                small_stats, b, opts.repeats)
        rows.append(row)
        print(row, flush=True)
    extra = {}
    for way in ("bcoo", "compacted"):
        for b in BATCHES:
            wins = [r["sparsity %"] for r in rows if r[f"{way} b{b} ms"] < r[f"dense b{b} ms"]]
            extra[f"{way} beats dense at batch {b} from"] = (
                f"{min(wins):g}% sparsity" if wins else "never (up to 98%)"
            )
    columns = list(rows[0])
    report("LeNet-300-100 inference on this CPU: dense, BCOO sparse, compacted (median ms)",
           columns, rows, extra, opts.json)


if __name__ == "__main__":
    main()
