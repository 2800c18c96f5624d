"""Lightning attention: causal linear attention with a per-head exponential decay, layout ``[B, T, H, D]``.

Contract (every form)::

    o_t = scale * sum_{i<=t} lambda^(t-i) (q_t . k_i) v_i  +  scale * lambda^(t+1) q_t S0
    S_T = lambda^T S0 + sum_i lambda^(T-1-i) k_i^T v_i,        lambda_h = exp(-decay_h)

- q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]`` (one dtype); ``decay`` ``[H]`` finite slopes ``>= 0`` (0: no decay),
  e.g. :func:`alibi_slopes`; ``scale`` default ``Dk ** -0.5``.
- ``o`` ``[B, T, H, Dv]`` in q's dtype; accumulation and states in fp32 (fp64 for fp64 inputs).
- ``initial_state`` / final state ``[B, H, Dk, Dv]``; with ``cu_seqlens`` (int ``[N + 1]``, ``B == 1``) the
  packed sequences are independent, the state restarts from ``initial_state[n]`` and the final state is
  ``[N, H, Dk, Dv]``.

Forms: :func:`naive_lightning_attention` (quadratic reference), :func:`chunk_lightning_attention` (LA-2 tiling,
the CPU default), :func:`recurrent_lightning_attention` (token loop) and :func:`lightning_step` (decode).
"""

from __future__ import annotations

import torch

from mixarch.kernels.dispatch import call
from mixarch.ops.lightning._common import check_chunk_size
from mixarch.ops.lightning.chunk import chunk_lightning_attention
from mixarch.ops.lightning.naive import naive_lightning_attention
from mixarch.ops.lightning.recurrent import lightning_step as reference_lightning_step
from mixarch.ops.lightning.recurrent import recurrent_lightning_attention
from mixarch.ops.lightning.slopes import alibi_slopes


def reference_lightning_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                        scale: float | None = None, initial_state: torch.Tensor | None = None,
                        output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                        chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch backend of :func:`lightning_attention`: a single token without ``cu_seqlens`` (``T == 1``,
    decode) takes the recurrent step; everything else the chunked form with ``chunk_size`` (capped at the
    longest sequence)."""
    check_chunk_size(chunk_size)
    if cu_seqlens is None and isinstance(q, torch.Tensor) and q.dim() == 4 and q.shape[1] == 1:
        return recurrent_lightning_attention(q, k, v, decay, scale=scale, initial_state=initial_state,
                                             output_final_state=output_final_state)
    return chunk_lightning_attention(q, k, v, decay, scale=scale, initial_state=initial_state,
                                     output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                     chunk_size=chunk_size)


def lightning_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                        scale: float | None = None, initial_state: torch.Tensor | None = None,
                        output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                        chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention (contract in :mod:`mixarch.ops.lightning`); returns ``(o, final_state or None)``.

    Runs the backend chosen by :mod:`mixarch.kernels` (Triton on CUDA, :func:`reference_lightning_attention`
    elsewhere; ``MIXARCH_KERNELS`` forces one).
    """
    return call("lightning_attention", q, k, v, decay, scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk_size=chunk_size)


def lightning_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor,
                   state: torch.Tensor | None, *, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step (see :func:`mixarch.ops.lightning.recurrent.lightning_step`), through the chosen backend."""
    return call("lightning_step", q, k, v, decay, state, scale=scale)


__all__ = [
    "alibi_slopes",
    "chunk_lightning_attention",
    "lightning_attention",
    "lightning_step",
    "naive_lightning_attention",
    "recurrent_lightning_attention",
    "reference_lightning_attention",
    "reference_lightning_step",
]
