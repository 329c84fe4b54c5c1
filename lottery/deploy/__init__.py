"""From a finished ticket to a shippable model.

Compaction of a structured-pruned network into a physically smaller one of the same family
(:mod:`.compact`), and what that buys: measured inference latency and bytes on disk
(:mod:`.latency`). Never trains, never decides what to prune.
"""

from lottery.deploy.compact import compact, kept_units, parameter_count
from lottery.deploy.latency import inference_latency, size_on_disk

__all__ = ["compact", "inference_latency", "kept_units", "parameter_count", "size_on_disk"]
