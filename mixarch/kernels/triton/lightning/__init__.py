"""Triton kernels of Lightning attention (the op and its contract: :mod:`mixarch.ops.lightning`).

- :mod:`.chunk`: chunked forward and backward kernels (segment-parallel state passing, fp32 states).
- :mod:`.gluon_sweep`: the forward's chunk sweep in Gluon for Hopper GPUs (long inputs, direct launches).
- :mod:`.recurrent`: the fused decode step.
- :mod:`.op`: torch custom ops (``torch.compile(fullgraph=True)``-safe, autograd) and the backends' entry
  points :func:`~.op.lightning_attention` / :func:`~.op.lightning_step`.
- :mod:`.plugin`: registers the backends ``("lightning_attention", "triton")`` and ``("lightning_step",
  "triton")`` through ``mixarch_register_kernels``.

Importing this package does not import Triton; :mod:`.op` does.
"""
