"""The training kernels and the process settings that make training fast on a CPU.

Networks (:mod:`lottery.models`) build their layers from here; nothing here knows a
network, a mask or training.

- :mod:`.layers`: the convolutions, BatchNorms and max-pools a network builds, on the
  kernels chosen where it is built (``kernels="xla"``, Flax's, or ``"cpu"``, written for
  XLA's CPU backend and also faster on a GPU, equal to float rounding), from
  :mod:`.convolution`, :mod:`.normalization` and :mod:`.pooling`.
- :mod:`.onednn`: oneDNN's forward convolution through XLA's custom call.
- :mod:`.xla_cpu`: XLA's convolution flag and a quiet cache warning (the command line's CPU
  settings, :func:`lottery.use_cpu_settings`).
- :mod:`.huge_pages`: malloc's transparent huge pages (the command restarts itself with them).
- :mod:`.probes`: what the installed jaxlib can do, found once per installation by trying it.

Importing this package imports no JAX: ``import lottery`` reaches :mod:`.xla_cpu` and stays
light.
"""
