"""Quadratic reference for Lightning attention: explicit decay mask ``M_ij = lambda^(i-j)`` (i >= j)."""

from __future__ import annotations

import torch

from mixarch.ops.lightning._common import check_inputs, initial_states


def _naive_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, scale: float,
               h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One (batch of) sequence(s), all in the accumulation dtype: q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``,
    s ``[H]``, h0 ``[B, H, Dk, Dv]`` -> o ``[B, T, H, Dv]``, final state ``[B, H, Dk, Dv]``."""
    t = q.shape[1]
    pos = torch.arange(t, device=q.device, dtype=s.dtype)
    diff = pos[:, None] - pos[None, :]  # i - j
    # lambda^(i-j) = exp(-s (i-j)) where i >= j, exactly 0 above the diagonal (exp(-inf)), never inf * 0
    expo = torch.where(diff >= 0, -diff[None] * s[:, None, None], torch.full_like(diff, float("-inf"))[None])
    mask = torch.exp(expo)  # [H, T, T]
    scores = torch.einsum("bihk,bjhk->bhij", q, k) * scale * mask
    o = torch.einsum("bhij,bjhv->bihv", scores, v)
    # initial state: o_t += scale * lambda^(t+1) q_t S0
    lam_t1 = torch.exp(-(pos[:, None] + 1) * s[None, :])  # [T, H]
    o = o + scale * torch.einsum("bthk,bhkv->bthv", q * lam_t1[None, :, :, None], h0)
    # final state: S_T = lambda^T S0 + sum_i lambda^(T-1-i) k_i^T v_i
    w = torch.exp(-(t - 1 - pos[:, None]) * s[None, :])  # [T, H]
    ht = torch.exp(-t * s)[None, :, None, None] * h0 + torch.einsum("bthk,bthv->bhkv", k * w[None, :, :, None], v)
    return o, ht


def naive_lightning_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                              scale: float | None = None, initial_state: torch.Tensor | None = None,
                              output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference ``o_t = scale * sum_{i<=t} lambda^(t-i) (q_t . k_i) v_i`` (+ initial state), ``lambda = exp(-decay)``.

    Builds the ``[B, H, T, T]`` decayed score matrix in fp32 (fp64 for fp64 inputs); packed sequences
    (``cu_seqlens``) are run one at a time.

    Args:
        q, k: ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]`` (one dtype).
        decay: ``[H]`` slopes ``s_h >= 0``.
        scale: default ``Dk ** -0.5``.
        initial_state: ``[B, H, Dk, Dv]`` (``[N, H, Dk, Dv]`` with ``cu_seqlens``).
        output_final_state: return the state after the last token.
        cu_seqlens: ``[N + 1]`` int boundaries of packed sequences (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, Dv]`` in q's dtype and the final state ``[B or N, H, Dk, Dv]`` (fp32, fp64 for
        fp64 inputs) or None.
    """
    c = check_inputs(q, k, v, decay, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens)
    b, _, h, dk = q.shape
    dv = v.shape[-1]
    qf, kf, vf = (x.to(c.acc) for x in (q, k, v))
    h0 = initial_states(initial_state, b if cu_seqlens is None else len(c.bounds), h, dk, dv, c.acc, q.device)
    if cu_seqlens is None:
        o, ht = _naive_one(qf, kf, vf, c.slopes, c.scale, h0)
    else:
        outs, states = [], []
        for n, (start, end) in enumerate(c.bounds):
            o_n, ht_n = _naive_one(qf[:, start:end], kf[:, start:end], vf[:, start:end], c.slopes, c.scale,
                                   h0[n:n + 1])
            outs.append(o_n)
            states.append(ht_n)
        o, ht = torch.cat(outs, dim=1), torch.cat(states, dim=0)
    return o.to(q.dtype), (ht if output_final_state else None)
