"""The CPU settings of the command line: XLA's convolution flag and a quiet cache warning.

jaxlib 0.10's CPU backend hands every convolution to YNNPACK by default. For the
convolutions of training that is the slow choice: a ResNet-20 train step took 1.47 s with
it and 0.66 s with XLA's Eigen convolutions, Conv-4's 0.90 s and 0.36 s, and the weight
gradient of a 32x32x64 convolution (batch 60) 0.8-1.3 s against 0.05 s
(``benchmarks/conv_cpu.py``, 2-core CPU). Dense layers are not convolutions and keep YNNPACK.

XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, so the flag must be set
before any JAX computation. Importing ``lottery`` changes nothing in the process (a library
must not); the command line (``python -m lottery``, ``lottery``) calls
:func:`use_cpu_settings` first, and so can a script or notebook, as
``lottery.use_cpu_settings()`` before its first JAX computation. The flag is added only

- if ``XLA_FLAGS`` does not already set ``xla_cpu_experimental_ynn_fusion_type`` (the
  user's choice wins: setting it to ``individual_convolution`` restores YNNPACK's), and
- if this XLA knows the flag (an unknown XLA flag aborts the process): a child process
  tries it once per installation (:mod:`lottery.kernels.probes`); measured on jaxlib 0.10.2 and
  0.12.1 (``benchmarks/conv_cpu.py``).
"""

from __future__ import annotations

import os
import warnings

from lottery.kernels import probes

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# Everything YNNPACK does by default except convolutions.
EIGEN_CONVOLUTIONS = f"--{YNN_FLAG}=-individual_convolution"
# The child program that finds whether this XLA accepts the flag (run under it).
FLAG_PROBE = "import jax.numpy as jnp; jnp.ones(2).sum().block_until_ready()"

# XLA cannot write an executable holding oneDNN's custom call (lottery.kernels.onednn) to
# JAX's persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``): JAX then warns "Error
# writing persistent compilation cache entry for 'jit_step': MemoryError: std::bad_alloc",
# which is no memory shortage; the program is compiled again in the next process.
CACHE_WRITE_WARNING = r"Error writing persistent compilation cache entry for .*std::bad_alloc"


def prefer_eigen_convolutions() -> bool:
    """Add :data:`EIGEN_CONVOLUTIONS` to ``XLA_FLAGS`` where it applies; True if it is set."""
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in flags:
        return EIGEN_CONVOLUTIONS in flags
    if not probes.passes("eigen_convolutions_flag", FLAG_PROBE, EIGEN_CONVOLUTIONS):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_CONVOLUTIONS}".strip()
    return True


def ignore_cache_write_warning() -> None:
    """Silence :data:`CACHE_WRITE_WARNING` (and only it) for the rest of the process."""
    warnings.filterwarnings("ignore", message=CACHE_WRITE_WARNING, category=UserWarning)


def use_cpu_settings() -> bool:
    """The command line's CPU settings, in this process: Eigen's convolutions in
    ``XLA_FLAGS`` (:func:`prefer_eigen_convolutions`) and no warning that oneDNN's programs
    cannot be cached (:func:`ignore_cache_write_warning`).

    Call it before the process's first JAX computation: XLA reads its flags once, when JAX
    starts a backend; later, the flag is written but takes no effect. Returns whether the
    flag is set. Safe to call more than once.
    """
    ignore_cache_write_warning()
    return prefer_eigen_convolutions()
