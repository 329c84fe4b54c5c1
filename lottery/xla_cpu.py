"""The XLA flag that makes convolutions fast on a CPU, set when ``lottery`` is imported.

jaxlib 0.10's CPU backend hands every convolution to YNNPACK by default. For the
convolutions of training that is the slow choice: a ResNet-20 train step took 1.47 s with
it and 0.66 s with XLA's Eigen convolutions, Conv-4's 0.90 s and 0.36 s, and the weight
gradient of a 32x32x64 convolution (batch 60) 0.8-1.3 s against 0.05 s
(``benchmarks/conv_cpu.py``, 2-core CPU). Dense layers are not convolutions and keep YNNPACK.

XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, so this must run before
any JAX computation: importing ``lottery`` does it. The flag is added only

- if ``XLA_FLAGS`` does not already set ``xla_cpu_experimental_ynn_fusion_type`` (the
  user's choice wins: setting it to ``individual_convolution`` restores YNNPACK's), and
- under the jaxlib versions it was measured with (an unknown XLA flag aborts the process).
"""

from __future__ import annotations

import os
from importlib import metadata

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# Everything YNNPACK does by default except convolutions.
EIGEN_CONVOLUTIONS = f"--{YNN_FLAG}=-individual_convolution"
MEASURED_JAXLIB = ("0.10.",)


def prefer_eigen_convolutions() -> bool:
    """Add :data:`EIGEN_CONVOLUTIONS` to ``XLA_FLAGS`` where it applies; True if it is set."""
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in flags:
        return EIGEN_CONVOLUTIONS in flags
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if not jaxlib_version.startswith(MEASURED_JAXLIB):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_CONVOLUTIONS}".strip()
    return True
