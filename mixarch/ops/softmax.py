"""Causal softmax attention (optionally windowed, packed or offset for decode), layout ``[B, T, H, D]``.

``softmax_attention`` is the fast path (torch SDPA; the flash kernel when nothing but causality is asked for);
``naive_softmax_attention`` is the explicit fp32 reference it is tested against.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


# Backends for calls whose key count differs from their query count (decode, chunked prefill): torch's default
# on Hopper, cuDNN attention, builds an execution graph per key length, and decode's key length grows every step.
# Measured on an H200 (torch 2.11, q_len 1, 16/2 heads of 128, 128K keys): ~34 ms per call at each new length
# against 0.1 ms for flash (bench/sdpa_decode.py); an all-softmax 1B model decoded at ~50 ms per token instead
# of ~14 (bench/e2e.py).
def _backends(q: torch.Tensor, t_q: int, t_k: int):
    """The enabled SDPA backends minus cuDNN for calls with growing keys on CUDA (unchanged if cuDNN is off, or
    if it is the only one on: the user's choice)."""
    if not (q.is_cuda and t_q != t_k and torch.backends.cuda.cudnn_sdp_enabled()):
        return contextlib.nullcontext()
    cuda = torch.backends.cuda
    allowed = [backend for backend, on in ((SDPBackend.FLASH_ATTENTION, cuda.flash_sdp_enabled()),
                                           (SDPBackend.EFFICIENT_ATTENTION, cuda.mem_efficient_sdp_enabled()),
                                           (SDPBackend.MATH, cuda.math_sdp_enabled())) if on]
    return sdpa_kernel(allowed) if allowed else contextlib.nullcontext()


def attention_mask(t_q: int, t_k: int, *, window: int | None = None, cu_seqlens: torch.Tensor | None = None,
                   device=None) -> torch.Tensor:
    """Boolean ``[t_q, t_k]`` mask, True where query ``i`` may attend key ``j``.

    Queries are the last ``t_q`` positions of the ``t_k`` keys (bottom-right aligned causality), so decode
    (``t_q = 1``) and chunked prefill share one rule. ``window`` keeps the ``window`` most recent keys
    (the query's own included). ``cu_seqlens`` (packed sequences, requires ``t_q == t_k``) forbids attention
    across sequence boundaries.
    """
    offset = t_k - t_q
    qi = torch.arange(t_q, device=device).unsqueeze(1) + offset
    kj = torch.arange(t_k, device=device).unsqueeze(0)
    mask = kj <= qi
    if window is not None:
        mask &= kj > qi - window
    if cu_seqlens is not None:
        if t_q != t_k:
            raise ValueError("cu_seqlens needs as many queries as keys")
        seq_id = torch.bucketize(torch.arange(t_k, device=device), cu_seqlens.to(device)[1:], right=True)
        mask &= seq_id.unsqueeze(1) == seq_id.unsqueeze(0)
    return mask


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be [B, T, H, D]")
    if k.shape != v.shape[:-1] + (k.shape[-1],) or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of key/value heads ({k.shape[2]})")


def padded_mask(t_q: int, t_k: int, key_valid: torch.Tensor, *, window: int | None = None) -> torch.Tensor:
    """``[B, 1, Tq, Tk]`` causal mask that also hides invalid (padding) keys ``key_valid`` ``[B, Tk]``; each
    query always sees its own key, so padding queries stay finite (their outputs are never used)."""
    mask = attention_mask(t_q, t_k, window=window, device=key_valid.device)
    own = torch.arange(t_k, device=key_valid.device).unsqueeze(0) == \
        (torch.arange(t_q, device=key_valid.device) + t_k - t_q).unsqueeze(1)
    return (mask.unsqueeze(0) & key_valid.unsqueeze(1) | own.unsqueeze(0)).unsqueeze(1)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                      window: int | None = None, cu_seqlens: torch.Tensor | None = None,
                      key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Causal (GQA) softmax attention through ``F.scaled_dot_product_attention``.

    Args:
        q: ``[B, Tq, Hq, D]``; k, v: ``[B, Tk, Hkv, D(v)]`` with ``Hq % Hkv == 0`` and ``Tk >= Tq``.
        scale: logit scale, default ``D ** -0.5``.
        window: optional sliding window (number of most recent keys visible, the query's own included).
        cu_seqlens: ``[N + 1]`` boundaries of packed sequences (``B == 1``, ``Tq == Tk``).
        key_valid: ``[B, Tk]`` bool, False for padding keys (see :func:`padded_mask`).
    Returns:
        ``[B, Tq, Hq, Dv]`` in ``q``'s dtype.
    """
    _check(q, k, v)
    t_q, t_k = q.shape[1], k.shape[1]
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    gqa = q.shape[2] != k.shape[2]
    with _backends(q, t_q, t_k):
        o = _sdpa(qh, kh, vh, t_q, t_k, scale=scale, window=window, cu_seqlens=cu_seqlens, key_valid=key_valid,
                  gqa=gqa)
    return o.transpose(1, 2)


def _sdpa(qh, kh, vh, t_q: int, t_k: int, *, scale, window, cu_seqlens, key_valid, gqa: bool) -> torch.Tensor:
    """SDPA on ``[B, H, T, D]`` tensors with the cheapest mask that expresses the call."""
    if key_valid is not None:
        if cu_seqlens is not None:
            raise ValueError("key_valid and cu_seqlens cannot be combined")
        mask = padded_mask(t_q, t_k, key_valid, window=window)
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale, enable_gqa=gqa)
    elif t_q == t_k and window is None and cu_seqlens is None:
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale, enable_gqa=gqa)
    elif t_q == 1 and (window is None or window >= t_k) and cu_seqlens is None:  # decode: every key is visible
        o = F.scaled_dot_product_attention(qh, kh, vh, scale=scale, enable_gqa=gqa)
    else:
        mask = attention_mask(t_q, t_k, window=window, cu_seqlens=cu_seqlens, device=qh.device)
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return o


def naive_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                            window: int | None = None, cu_seqlens: torch.Tensor | None = None,
                            key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for :func:`softmax_attention`: explicit scores, mask and softmax in fp32 (fp64 for fp64 input)."""
    _check(q, k, v)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    group = q.shape[2] // k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kf = k.to(acc).repeat_interleave(group, dim=2)
    vf = v.to(acc).repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.to(acc), kf) * scale
    if key_valid is not None:
        mask = padded_mask(q.shape[1], k.shape[1], key_valid, window=window)
    else:
        mask = attention_mask(q.shape[1], k.shape[1], window=window, cu_seqlens=cu_seqlens, device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    o = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, dim=-1), vf)
    return o.to(q.dtype)
