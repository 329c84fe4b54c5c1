"""From a finished ticket to a shippable model.

Compaction of a structured-pruned network into a physically smaller one of the same family
(:mod:`.compact`), and what that buys: measured inference latency and bytes on disk
(:mod:`.latency`); the ONNX file of a network
(:mod:`.onnx_export`). Never trains, never decides what to prune.
"""

from lottery.deploy.compact import compact, kept_units, parameter_count
from lottery.deploy.latency import inference_latency, size_on_disk
from lottery.deploy.onnx_export import export_onnx, onnx_session, to_onnx

__all__ = [
    "compact",
    "export_onnx",
    "inference_latency",
    "kept_units",
    "onnx_session",
    "parameter_count",
    "size_on_disk",
    "to_onnx",
]
