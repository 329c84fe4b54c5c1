"""Edge inference on this CPU: which pruned network, run by which runtime, is fastest?

LeNet-300-100 (28x28x1), Conv-4, ResNet-20 and MobileNetV2 (CIFAR variant; 32x32x3) with
random weights (the speed does not depend on their values), each at three fractions (the
"fraction %" column: of the weights for ``masked``, of the blocks for ``blocks``; "weights
left %" is what remains of the prunable kernels):

- ``masked``: that fraction of the kernels pruned by magnitude, layer-wise (the shapes
  stay: both runtimes multiply the zeros);
- ``compacted``: a structured ticket keeping about the square root of 1 - fraction of the
  units (neurons, channels) per layer, so about that fraction of the weights, compacted
  into a narrower network (:func:`lottery.deploy.compact`);
- ``blocks`` (ResNet-20, MobileNetV2): that fraction of the identity-shortcut blocks removed
  (:func:`lottery.pruning.structured.block_prune`), compacted into a shallower network;
  ``blocks+compacted``: both masks together;
- ``int8`` (LeNet only: Qwix quantizes a convolution's weights only with its activations,
  ``int8_dynamic``, which the ONNX file does not write): the compacted ticket with int8
  weights, in JAX (Qwix) and as ONNX weight-only QDQ.

Each runs in JAX (jitted, every core) and in onnxruntime from the file
:func:`lottery.deploy.to_onnx` writes (every core, and one thread), at batch 1 and 256:
the median of ``--repeats`` timed calls (a fifth of them, at least 3, at batch 256). Prints,
per network and batch size, the fastest combination.

    python benchmarks/edge.py [--repeats 20] [--models lenet_300_100,conv4] [--json out.json]

LiteRT (``ai-edge-litert``) runs ``.tflite`` files only, and every way from a JAX program or
an ONNX file to one goes through TensorFlow (jax2tf or onnx2tf, then TFLite's converter),
which this package does not install: LiteRT is not measured.
"""

from __future__ import annotations

from common import parser, report

MODELS = {"lenet_300_100": (28, 28, 1), "conv4": (32, 32, 3), "resnet20": (32, 32, 3),
          "mobilenetv2_cifar": (32, 32, 3)}
SPARSITIES = (0.5, 0.8, 0.95)
BATCHES = (1, 256)
WITH_BLOCKS = ("resnet20", "mobilenetv2_cifar")


def latencies(network, params, stats, repeats: int, quantized=None) -> dict[str, float]:
    """JAX and onnxruntime milliseconds of one network (``quantized``: its int8 version):
    ``repeats`` calls at batch 1, a fifth of them (at least 3) at batch 256."""
    from lottery.deploy import inference_latency, to_onnx
    from lottery.deploy.latency import forward_latency
    from lottery.deploy.onnx_export import onnx_latency

    model = to_onnx(network, params, stats, quantized=quantized)
    row = {}
    for b in BATCHES:
        n = repeats if b == 1 else max(3, repeats // 5)
        if quantized is None:
            seconds = inference_latency(network, params, stats, b, n)
        else:
            seconds = forward_latency(quantized.forward, network.input_shape, b, n)
        row[f"jax b{b}"] = 1e3 * seconds
        row[f"ort b{b}"] = 1e3 * onnx_latency(model, network.input_shape, b, None, n)
        row[f"ort 1t b{b}"] = 1e3 * onnx_latency(model, network.input_shape, b, 1, n)
    return row


def model_rows(name: str, repeats: int) -> list[dict]:
    """The rows of one network: dense, then each way at each sparsity."""
    import jax
    import numpy as np

    from lottery import models
    from lottery.config import ModelConfig
    from lottery.deploy import compact
    from lottery.deploy.quantize import quantize
    from lottery.pruning import apply_mask, count_alive, full_mask, magnitude_prune, prunable_paths
    from lottery.pruning.structured import block_prune, structured_prune

    network = models.build(ModelConfig(name=name), MODELS[name], 10)
    params, stats = jax.device_get(network.init(jax.random.key(0)))
    prunable = prunable_paths(params, ".*kernel")
    total = count_alive(full_mask(params), prunable)
    rows = []

    def add(way: str, sparsity: float, mask, figures: dict[str, float]) -> None:
        kept = count_alive(mask, prunable) / total if mask is not None else 1.0
        rows.append({"model": name, "way": way, "fraction %": 100 * sparsity,
                     "weights left %": 100 * kept, **figures})
        print(rows[-1], flush=True)

    add("dense", 0.0, None, latencies(network, params, stats, repeats))
    for sparsity in SPARSITIES:
        mask = magnitude_prune(params, full_mask(params), prunable, "layerwise", sparsity, {})
        add("masked", sparsity, mask, latencies(network, apply_mask(params, mask), stats, repeats))
        units = 1 - (1 - sparsity) ** 0.5
        channels = structured_prune(params, full_mask(params), units, "layerwise", "l1")
        small = compact(network, params, stats, channels)
        add("compacted", sparsity, channels, latencies(*small, repeats))
        if name in WITH_BLOCKS:
            blocks = block_prune(params, full_mask(params), sparsity)
            add("blocks", sparsity, blocks,
                latencies(*compact(network, params, stats, blocks), repeats))
            both = jax.tree.map(np.logical_and, channels, blocks)
            add("blocks+compacted", sparsity, both,
                latencies(*compact(network, params, stats, both), repeats))
        if name == "lenet_300_100":
            add("int8 compacted", sparsity, channels,
                latencies(*small, repeats, quantized=quantize(*small, "int8")))
    return rows


def fastest(rows: list[dict]) -> dict[str, str]:
    """Per network and batch size, the fastest way and runtime, against dense."""
    extra = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        dense = next(r for r in rows if r["model"] == name and r["way"] == "dense")
        for b in BATCHES:
            candidates = [(r[f"{runtime} b{b}"], f"{r['way']} at {r['fraction %']:g}%, "
                           f"{runtime}") for r in rows if r["model"] == name
                          for runtime in ("jax", "ort", "ort 1t")]
            ms, what = min(candidates)
            extra[f"{name} fastest at batch {b}"] = (
                f"{what}: {ms:.3f} ms (dense: jax {dense[f'jax b{b}']:.3f}, "
                f"onnxruntime {dense[f'ort b{b}']:.3f})")
    return extra


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--repeats", type=int, default=20)
    args.add_argument("--models", default=",".join(MODELS))
    opts = args.parse_args()
    rows = [row for name in opts.models.split(",") for row in model_rows(name, opts.repeats)]
    report("Edge inference on this CPU: JAX and onnxruntime (median ms; 1t: one thread)",
           list(rows[0]), rows, fastest(rows), opts.json)


if __name__ == "__main__":
    main()
