"""Token-by-token Lightning attention: ``S_t = lambda S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``."""

from __future__ import annotations

import torch

from mixarch.ops.lightning._common import check_inputs, check_state, initial_states


def _step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, state: torch.Tensor,
          scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k ``[B, H, Dk]``, v ``[B, H, Dv]``, lam ``[H]``, state ``[B, H, Dk, Dv]`` (all in the accumulation
    dtype) -> o ``[B, H, Dv]``, new state."""
    state = lam[:, None, None] * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    o = scale * (q.unsqueeze(-2) @ state).squeeze(-2)
    return o, state


def recurrent_lightning_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                                  scale: float | None = None, initial_state: torch.Tensor | None = None,
                                  output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention one token at a time (fp32 state, fp64 for fp64 inputs); the state restarts from
    ``initial_state[n]`` at the start of each packed sequence ``n``.

    Shapes as :func:`mixarch.ops.lightning.naive_lightning_attention`: q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``,
    decay ``[H]``; returns ``o`` ``[B, T, H, Dv]`` (q's dtype) and the final state ``[B or N, H, Dk, Dv]`` or None.
    """
    c = check_inputs(q, k, v, decay, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens)
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    qf, kf, vf = (x.to(c.acc) for x in (q, k, v))
    lam = torch.exp(-c.slopes)
    h0 = initial_states(initial_state, b if cu_seqlens is None else len(c.bounds), h, dk, dv, c.acc, q.device)
    # unbind once (per-token indexing would make backward quadratic in T)
    qs, ks, vs = qf.unbind(1), kf.unbind(1), vf.unbind(1)
    starts = [h0] if cu_seqlens is None else list(h0.split(1, dim=0))
    outs, finals = [], []
    for state, (start, end) in zip(starts, c.bounds):
        for i in range(start, end):
            o_i, state = _step(qs[i], ks[i], vs[i], lam, state, c.scale)
            outs.append(o_i)
        finals.append(state)
    o = torch.stack(outs, dim=1) if outs else vf.new_zeros(b, 0, h, dv)
    ht = torch.cat(finals, dim=0)
    return o.to(q.dtype), (ht if output_final_state else None)


def lightning_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor,
                   state: torch.Tensor | None, *, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step: ``S' = lambda S + k^T v``, ``o = scale q S'``.

    Args:
        q, k: ``[B, 1, H, Dk]``; v: ``[B, 1, H, Dv]`` (the op's ``[B, T, H, D]`` layout with ``T == 1``).
        decay: ``[H]`` slopes ``s_h >= 0`` (``lambda = exp(-s)``).
        state: ``[B, H, Dk, Dv]`` (None: zeros); read, not modified.
        scale: default ``Dk ** -0.5``.
    Returns:
        ``o`` ``[B, 1, H, Dv]`` in q's dtype and the new state ``[B, H, Dk, Dv]`` in fp32 (fp64 for fp64 inputs).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a [B, 1, H, D] tensor for lightning_step, got {got}")
    c = check_inputs(q, k, v, decay, scale=scale, initial_state=None, cu_seqlens=None)
    b, _, h, dk = q.shape
    dv = v.shape[-1]
    check_state(state, (b, h, dk, dv), "state")
    s0 = initial_states(state, b, h, dk, dv, c.acc, q.device)
    lam = torch.exp(-c.slopes)
    o, new_state = _step(q[:, 0].to(c.acc), k[:, 0].to(c.acc), v[:, 0].to(c.acc), lam, s0, c.scale)
    return o.unsqueeze(1).to(q.dtype), new_state
