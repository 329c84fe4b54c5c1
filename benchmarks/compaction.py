"""What structured pruning buys at inference, and what unstructured sparsity does not.

For each network (LeNet-300-100 on 28x28x1, Conv-4 and ResNet-20 on 32x32x3), from its
initial weights (latency and size do not depend on what the weights learned):

- **structured**: 20% of the remaining neurons / channels removed per level by L1 norm
  (``structured_prune``) for ``--levels`` levels, then compacted into a smaller Flax network
  (``lottery.deploy.compact``): its parameters, bytes, theoretical speed-up (FLOPs) and the
  measured median CPU latency at batch 1 and 256 against the dense network's;
- **unstructured**: global magnitude pruning to the same share of weights: the mask changes
  no latency (the zeros are still multiplied), but the sparse format
  (``params_sparse.npz``) shrinks the file; its bytes against the dense npz.

    python benchmarks/compaction.py [--levels 5] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import parser, report

NETWORKS = {
    "LeNet-300-100": ("lenet_300_100", (28, 28, 1)),
    "Conv-4": ("conv4", (32, 32, 3)),
    "ResNet-20": ("resnet20", (32, 32, 3)),
}


def main() -> None:
    import jax

    from lottery import models
    from lottery.config import ModelConfig
    from lottery.deploy import compact, inference_latency, parameter_count, size_on_disk
    from lottery.deploy.sparse_format import dense_size, save_sparse
    from lottery.pruning import count_alive, full_mask, magnitude_prune, prunable_paths
    from lottery.pruning.cost import cost_report
    from lottery.pruning.structured import structured_prune

    args = parser(__doc__.splitlines()[0])
    args.add_argument("--levels", type=int, default=5)
    args.add_argument("--repeats", type=int, default=20)
    args.add_argument("--networks", default=",".join(NETWORKS))
    opts = args.parse_args()
    rows = []
    for label in opts.networks.split(","):
        name, shape = NETWORKS[label]
        network = models.build(ModelConfig(name=name), shape, 10)
        params, stats = network.init(jax.random.key(0))
        params, stats = jax.device_get((params, stats))
        prunable = prunable_paths(params, r".*kernel")
        mask = full_mask(params)
        for _ in range(opts.levels):
            mask = structured_prune(params, mask, 0.2, "layerwise", "l1")
        small, small_params, small_stats = compact(network, params, stats, mask)
        alive = count_alive(mask, prunable)
        total = count_alive(full_mask(params), prunable)
        unstructured = magnitude_prune(params, full_mask(params), prunable, "global",
                                       1 - alive / total, {})
        with tempfile.TemporaryDirectory() as folder:
            sparse_bytes = save_sparse(Path(folder) / "sparse.npz", params, unstructured)
        row = {
            "network": label,
            "weights %": 100 * alive / total,
            "params": parameter_count(params),
            "compacted params": parameter_count(small_params),
            "dense MB": size_on_disk(params) / 1e6,
            "compacted MB": size_on_disk(small_params) / 1e6,
            "FLOPs speed-up": cost_report(network, params, mask)["theoretical_speedup"],
        }
        for batch in (1, 256):
            dense_ms = 1e3 * inference_latency(network, params, stats, batch, opts.repeats)
            small_ms = 1e3 * inference_latency(small, small_params, small_stats, batch,
                                               opts.repeats)
            row[f"dense ms b{batch}"] = dense_ms
            row[f"compacted ms b{batch}"] = small_ms
            row[f"speed-up b{batch}"] = dense_ms / small_ms
        row["unstructured sparse MB"] = sparse_bytes / 1e6
        row["dense npz MB"] = dense_size(params) / 1e6
        rows.append(row)
    report(
        f"Structured pruning ({opts.levels} levels of 20% of the units) compacted, "
        "against dense, median CPU latency",
        list(rows[0]),
        rows,
        {"levels": opts.levels, "repeats": opts.repeats},
        opts.json,
    )


if __name__ == "__main__":
    main()
