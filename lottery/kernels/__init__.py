"""The training kernels and the process settings that make training fast on a CPU.

Networks (:mod:`lottery.models`) build their layers from here; nothing here knows a
network, a mask or training.

- :mod:`.cpu_kernels`: a convolution, a BatchNorm and a max-pool written for XLA's CPU
  backend (also faster on a GPU), equal to Flax's layers to float rounding.
- :mod:`.onednn`: oneDNN's forward convolution through XLA's custom call.
- :mod:`.xla_cpu`: XLA's convolution flag and a quiet cache warning (the command line's CPU
  settings, :func:`lottery.use_cpu_settings`).
- :mod:`.huge_pages`: malloc's transparent huge pages (the command restarts itself with them).
- :mod:`.probes`: what the installed jaxlib can do, found once per installation by trying it.

Importing this package imports no JAX: ``import lottery`` reaches :mod:`.xla_cpu` and stays
light.
"""
