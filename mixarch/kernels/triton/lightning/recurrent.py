"""Fused Lightning decode step in Triton: ``S' = lambda S + k^T v``, ``o = scale q S'`` in one pass over the state."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mixarch.kernels.triton import cdiv, launcher, pow2

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _step(q, k, v, decay, state, new_state, o, scale, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
          BK: tl.constexpr, BV: tl.constexpr, HAS_STATE: tl.constexpr):
    """One (batch * head, value block): reads q, k ``[DK]``, v ``[BV]`` and the ``[DK, BV]`` state tile once,
    writes the new tile (fp32) and ``o[BV]``."""
    bh = tl.program_id(0)
    iv = tl.program_id(1) * BV + tl.arange(0, BV)
    ik = tl.arange(0, BK)
    mk = ik < DK
    mv = iv < DV
    tq = tl.load(q + bh * DK + ik, mask=mk, other=0.0).to(tl.float32)
    tk = tl.load(k + bh * DK + ik, mask=mk, other=0.0).to(tl.float32)
    tv = tl.load(v + bh * DV + iv, mask=mv, other=0.0).to(tl.float32)
    off = bh.to(tl.int64) * (DK * DV) + ik[:, None] * DV + iv[None, :]
    mask = mk[:, None] & mv[None, :]
    s = tk[:, None] * tv[None, :]
    if HAS_STATE:
        lam = tl.exp2(-tl.load(decay + bh % H) * LOG2E)
        s += lam * tl.load(state + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(new_state + off, s, mask=mask)
    tl.store(o + bh * DV + iv, (scale * tl.sum(tq[:, None] * s, axis=0)).to(o.dtype.element_ty), mask=mv)


def step_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, state: torch.Tensor | None,
             scale: float, *, direct: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k ``[B, 1, H, Dk]``, v ``[B, 1, H, Dv]`` contiguous; decay ``[H]`` fp32; state ``[B, H, Dk, Dv]``
    contiguous (any float dtype) or None (zeros). Returns o ``[B, 1, H, Dv]`` (q's dtype) and the new state
    ``[B, H, Dk, Dv]`` fp32; ``state`` is not modified.

    ``direct``: launch the kernel itself (eager calls; see :func:`~mixarch.kernels.triton.launcher`)."""
    b, _, h, dk = q.shape
    dv = v.shape[-1]
    o = torch.empty(b, 1, h, dv, dtype=q.dtype, device=q.device)
    new_state = torch.empty(b, h, dk, dv, dtype=torch.float32, device=q.device)
    bk = pow2(dk, 16)
    bv = min(32, pow2(dv, 16))
    launcher(_step, direct)[(b * h, cdiv(dv, bv))](
        q, k, v, decay, state, new_state, o, scale, H=h, DK=dk, DV=dv, BK=bk, BV=bv, HAS_STATE=state is not None,
        num_warps=4)
    return o, new_state
