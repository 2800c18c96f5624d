"""Chunked (Lightning-2 tiling) Lightning attention in torch: intra-chunk masked product + inter-chunk state.

For a chunk of ``L <= C`` tokens with offsets ``r, c`` and state ``S`` before it (fp32, fp64 for fp64 inputs)::

    o_r   = scale * ( sum_{c<=r} lambda^(r-c) (q_r . k_c) v_c  +  lambda^(r+1) q_r S )
    S_new = lambda^L S + sum_c lambda^(L-1-c) k_c^T v_c

All chunks of all sequences are laid out in one zero-padded ``[R, H, n_chunks, C, D]`` buffer (packed sequences
start fresh chunks, so a chunk never spans a boundary); only the state scan is a Python loop over chunks.
Differentiable by autograd.
"""

from __future__ import annotations

import torch

from mixarch.ops.lightning._common import check_chunk_size, check_inputs, initial_states


def _layout(bounds: list[tuple[int, int]], chunk: int, t: int, device):
    """Chunk bookkeeping for sequences ``bounds`` cut into chunks of ``chunk`` tokens.

    Returns ``src`` ``[n_chunks * chunk]`` (token index per slot, ``t`` = padding), ``dst`` ``[t]`` (slot per
    token), ``lens`` ``[n_chunks]`` (tokens per chunk) and, per sequence, its ``range`` of chunk indices.
    """
    starts, lens, ranges = [], [], []
    for start, end in bounds:
        first = len(starts)
        for a in range(start, end, chunk):
            starts.append(a)
            lens.append(min(chunk, end - a))
        ranges.append(range(first, len(starts)))
    starts_t = torch.tensor(starts, dtype=torch.long, device=device)
    lens_t = torch.tensor(lens, dtype=torch.long, device=device)
    offs = torch.arange(chunk, device=device)
    valid = offs[None, :] < lens_t[:, None]  # [n_chunks, chunk]
    src = torch.where(valid, starts_t[:, None] + offs[None, :], torch.full_like(valid, t, dtype=torch.long))
    src = src.reshape(-1)
    dst = torch.zeros(t, dtype=torch.long, device=device)
    dst[src[valid.reshape(-1)]] = torch.nonzero(valid.reshape(-1)).squeeze(-1)
    return src, dst, lens_t, ranges


def chunk_lightning_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                              scale: float | None = None, initial_state: torch.Tensor | None = None,
                              output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                              chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked Lightning attention; same contract as :func:`mixarch.ops.lightning.naive_lightning_attention`.

    Args:
        q, k: ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]`` (one dtype).
        decay: ``[H]`` slopes ``s_h >= 0``, ``lambda_h = exp(-s_h)``.
        scale: default ``Dk ** -0.5``.
        initial_state: ``[B, H, Dk, Dv]`` (``[N, H, Dk, Dv]`` with ``cu_seqlens``).
        output_final_state: return the state after the last token.
        cu_seqlens: ``[N + 1]`` int boundaries of packed sequences (``B == 1``); the state restarts at each.
        chunk_size: tokens per chunk (any ``T`` works; capped at the longest sequence's length).
    Returns:
        ``o`` ``[B, T, H, Dv]`` in q's dtype and the final state ``[B or N, H, Dk, Dv]`` (fp32, fp64 for fp64
        inputs) or None.
    """
    check_chunk_size(chunk_size)
    c = check_inputs(q, k, v, decay, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens)
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    acc, s, dev = c.acc, c.slopes, q.device
    h0 = initial_states(initial_state, b if cu_seqlens is None else len(c.bounds), h, dk, dv, acc, dev)
    longest = max(end - start for start, end in c.bounds)
    if longest == 0:  # nothing to attend: the states pass through
        ht = h0.clone() if output_final_state else None
        return v.new_zeros(b, t, h, dv, dtype=q.dtype), ht
    chunk = min(chunk_size, longest)
    src, dst, lens, ranges = _layout(c.bounds, chunk, t, dev)
    n_chunks = lens.numel()

    def gather(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, H, n_chunks, chunk, D], zero-padded
        x = torch.cat([x.to(acc), x.new_zeros(b, 1, h, x.shape[-1], dtype=acc)], dim=1)
        return x.index_select(1, src).view(b, n_chunks, chunk, h, -1).permute(0, 3, 1, 2, 4)

    qc, kc, vc = gather(q) * c.scale, gather(k), gather(v)
    r = torch.arange(chunk, device=dev, dtype=acc)
    diff = r[:, None] - r[None, :]
    # intra-chunk decay D[h, r, c] = lambda^(r-c) for r >= c, else exactly 0
    expo = torch.where(diff >= 0, -diff[None] * s[:, None, None], torch.full_like(diff, float("-inf"))[None])
    intra = torch.einsum("bhnrk,bhnck->bhnrc", qc, kc) * torch.exp(expo)[:, None]
    o = intra @ vc  # [B, H, n_chunks, chunk, Dv]

    # each chunk's own contribution to the state after it: sum_c lambda^(L-1-c) k_c^T v_c (padding weighs 0)
    lf = lens.to(acc)
    age = lf[:, None] - 1 - r[None, :]  # [n_chunks, chunk]; negative only on padding
    w = torch.exp(-age.clamp(min=0)[None] * s[:, None, None]) * (age >= 0)  # [H, n_chunks, chunk]
    contrib = torch.einsum("bhnck,bhncv->bhnkv", kc * w[None, :, :, :, None], vc)
    carry = torch.exp(-lf[None, :] * s[:, None])[:, :, None, None]  # lambda^L per chunk, [H, n_chunks, 1, 1]

    # unbind (not per-step indexing) so that backward stacks the gradients once instead of n_chunks times
    contribs, carries = contrib.unbind(2), carry.unbind(1)
    starts = [h0] if cu_seqlens is None else list(h0.split(1, dim=0))
    states, finals = [], []
    for state, rng in zip(starts, ranges):
        for j in rng:
            states.append(state)
            state = carries[j] * state + contribs[j]
        finals.append(state)
    before = torch.stack(states, dim=2)  # state entering each chunk, [B, H, n_chunks, Dk, Dv]
    q_dec = qc * torch.exp(-(r[None, :] + 1) * s[:, None])[None, :, None, :, None]  # lambda^(r+1) q_r
    o = o + q_dec @ before

    o = o.permute(0, 2, 3, 1, 4).reshape(b, n_chunks * chunk, h, dv).index_select(1, dst)
    ht = torch.cat(finals, dim=0) if output_final_state else None
    return o.to(q.dtype), ht
