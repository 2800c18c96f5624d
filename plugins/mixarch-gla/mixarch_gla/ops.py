"""Gated Linear Attention (Yang et al., 2023) in pure PyTorch: a recurrent reference and a chunked form.

Layout ``[B, T, H, D]``. ``g`` is the per-key-channel log forget gate ``[B, T, H, Dk]`` (``g <= 0``; assumed,
not checked)::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        S: [Dk, Dv], one per sequence and head
    o_t = scale * q_t S_t                           scale defaults to Dk ** -0.5

Both forms take the same arguments and return ``(o, final_state)``: ``o`` ``[B, T, H, Dv]`` in q's dtype,
``final_state`` ``[B or N, H, Dk, Dv]`` (None unless ``output_final_state``). Accumulation and states are fp32
(fp64 for fp64 inputs). ``initial_state`` is ``[B or N, H, Dk, Dv]`` of any float dtype. ``cu_seqlens``
(``[N + 1]`` int, ``B == 1``) packs ``N`` sequences into one row; the state restarts (from
``initial_state[n]`` or zeros) at each sequence.

The chunked form never divides by a cumulative gate: within a chunk it forms the pairwise decays
``exp(g_{j+1} + ... + g_i)`` for ``j <= i`` only, each log decay summed directly (not as a difference of
cumulative sums, which loses precision once they are large), so every exponent is ``<= 0`` and gates of any
strength stay finite and accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / state dtype: fp64 for fp64 inputs, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class _Call:
    acc: torch.dtype
    scale: float
    bounds: list[tuple[int, int]] | None  # (start, end) per packed sequence; None without cu_seqlens
    n_states: int


def _check(q, k, v, g, scale, initial_state, cu_seqlens) -> _Call:
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a [B, T, H, D] tensor, got {got}")
        if x.dtype not in _FLOATS:
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if g.shape != q.shape:
        raise ValueError(f"g (log forget gate per key channel) must have q's shape {tuple(q.shape)}, "
                         f"got {tuple(g.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, Dv] with B, T, H of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    if dk == 0 or dv == 0:
        raise ValueError("head dims Dk and Dv must be positive")
    if scale is None:
        scale = dk ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a float or None, got {type(scale).__name__}")
    bounds = None
    n_states = b
    if cu_seqlens is not None:
        if (not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2
                or cu_seqlens.is_floating_point()):
            raise ValueError("cu_seqlens must be a 1-D integer tensor [N + 1] of sequence boundaries")
        if b != 1:
            raise ValueError(f"cu_seqlens needs a batch of one packed row, got batch size {b}")
        cu = [int(c) for c in cu_seqlens.tolist()]
        if cu[0] != 0 or cu[-1] != t or any(a > c for a, c in zip(cu[:-1], cu[1:])):
            raise ValueError(f"cu_seqlens must rise from 0 to T={t} without decreasing, got {cu}")
        bounds = list(zip(cu[:-1], cu[1:]))
        n_states = len(bounds)
    if initial_state is not None:
        want = (n_states, h, dk, dv)
        if not isinstance(initial_state, torch.Tensor) or not initial_state.is_floating_point():
            raise ValueError(f"initial_state must be a floating-point tensor of shape {list(want)}")
        if tuple(initial_state.shape) != want:
            raise ValueError(f"initial_state must have shape {list(want)} ([B or N, H, Dk, Dv]), "
                             f"got {list(initial_state.shape)}")
    return _Call(acc_dtype(q.dtype), float(scale), bounds, n_states)


def _initial(initial_state, n: int, h: int, dk: int, dv: int, acc: torch.dtype, device) -> torch.Tensor:
    if initial_state is None:
        return torch.zeros(n, h, dk, dv, dtype=acc, device=device)
    return initial_state.to(device=device, dtype=acc)


def _recurrent(q, k, v, g, state, scale):
    """One sequence (per batch row) token by token; all inputs already in the accumulation dtype."""
    b, t, h, _ = q.shape
    outs = []
    for i in range(t):
        state = state * g[:, i].exp().unsqueeze(-1) + k[:, i].unsqueeze(-1) * v[:, i].unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, i], state))
    o = torch.stack(outs, dim=1) * scale if outs else v.new_zeros(b, 0, h, v.shape[-1])
    return o, state


def naive_recurrent_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, *,
                        scale: float | None = None, initial_state: torch.Tensor | None = None,
                        output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA one token at a time (the reference, and the decode step). See the module docstring."""
    c = _check(q, k, v, g, scale, initial_state, cu_seqlens)
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    qf, kf, vf, gf = (x.to(c.acc) for x in (q, k, v, g))
    s0 = _initial(initial_state, c.n_states, h, dk, dv, c.acc, q.device)
    if c.bounds is None:
        o, final = _recurrent(qf, kf, vf, gf, s0, c.scale)
    else:
        outs, finals = [], []
        for n, (s, e) in enumerate(c.bounds):
            o_n, s_n = _recurrent(qf[:, s:e], kf[:, s:e], vf[:, s:e], gf[:, s:e], s0[n:n + 1], c.scale)
            outs.append(o_n)
            finals.append(s_n)
        o, final = torch.cat(outs, dim=1), torch.cat(finals, dim=0)
    return o.to(q.dtype), (final if output_final_state else None)


def chunk_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, *, scale: float | None = None,
              initial_state: torch.Tensor | None = None, output_final_state: bool = False,
              cu_seqlens: torch.Tensor | None = None, chunk_size: int = 16
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA in chunks of ``chunk_size`` tokens: quadratic within a chunk, recurrent across chunks.

    Each packed sequence starts on a chunk boundary (zero padding: ``k = 0`` adds nothing to the state and
    ``g = 0`` decays nothing), so all chunks of all sequences are processed in one batched computation and
    only the ``[H, Dk, Dv]`` state update runs chunk by chunk.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    call = _check(q, k, v, g, scale, initial_state, cu_seqlens)
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    size, acc, device = chunk_size, call.acc, q.device
    bounds = call.bounds if call.bounds is not None else [(0, t)]

    # where each token goes in the padded layout, and which chunks belong to which sequence
    dst, segments, n_chunks = [], [], 0
    for s, e in bounds:
        n = math.ceil((e - s) / size)
        dst.extend(range(n_chunks * size, n_chunks * size + (e - s)))
        segments.append((n_chunks, n))
        n_chunks += n
    t_pad = n_chunks * size
    dst_idx = torch.tensor(dst, dtype=torch.long, device=device)

    def pad(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, Nc, C, H, D] in acc
        x = x.to(acc)
        out = torch.zeros(b, t_pad, h, x.shape[-1], dtype=acc, device=device).index_copy(1, dst_idx, x)
        return out.view(b, n_chunks, size, h, x.shape[-1])

    qc, kc, vc, gc = pad(q), pad(k), pad(v), pad(g)
    cum = gc.cumsum(dim=2)  # G_i = g_0 + ... + g_i within the chunk, [B, Nc, C, H, Dk]

    # pairwise log decays D_ij = g_{j+1} + ... + g_i (j <= i), summed directly rather than as G_i - G_j, which
    # would cancel catastrophically once |G| is large; every exponent is <= 0
    ones = torch.ones(size, size, dtype=torch.bool, device=device)
    causal, strict = ones.tril().view(size, size, 1, 1), ones.tril(-1).view(size, size, 1, 1)
    seg = torch.where(strict, gc.unsqueeze(3), 0.0).cumsum(dim=2)  # row i: sum over j < m <= i
    pair = seg.masked_fill(~causal, float("-inf")).exp()  # [B, Nc, Ci, Cj, H, Dk], 0 above the diagonal

    # intra-chunk: o_i = scale * sum_{j <= i} (sum_d q_id k_jd exp(D_ijd)) v_j
    scores = (qc.unsqueeze(3) * kc.unsqueeze(2) * pair).sum(-1) * call.scale  # [B, Nc, Ci, Cj, H]
    o = torch.einsum("bnijh,bnjhv->bnihv", scores, vc)

    # state carried across chunks: S <- diag(exp(G_last)) S + sum_j (k_j * exp(D_last,j))^T v_j
    update = torch.einsum("bnjhk,bnjhv->bnhkv", kc * pair[:, :, -1], vc)
    last = cum[:, :, -1]  # G of the chunk's last position (padding decays nothing)
    decay = last.exp().unsqueeze(-1)  # [B, Nc, H, Dk, 1]
    s0 = _initial(initial_state, call.n_states, h, dk, dv, acc, device)
    before, finals = [], []
    for n, (first, count) in enumerate(segments):
        state = s0 if call.bounds is None else s0[n:n + 1]
        for c in range(first, first + count):
            before.append(state)
            state = decay[:, c] * state + update[:, c]
        finals.append(state)
    if before:  # inter-chunk: o_i += scale * (q_i * exp(G_i)) S_before
        o = o + torch.einsum("bnihk,bnhkv->bnihv", qc * cum.exp(), torch.stack(before, dim=1)) * call.scale
    o = o.reshape(b, t_pad, h, dv).index_select(1, dst_idx)
    final = torch.cat(finals, dim=0) if output_final_state else None
    return o.to(q.dtype), final
