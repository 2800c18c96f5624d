"""InfLLM-V2 sparse attention (exact torch reference): dense below ``dense_len`` keys, else stage 1 selection
(:mod:`mixarch.ops.infllm_v2.select`) + stage 2 exact attention over the selected blocks. Layout ``[B, T, H, D]``.

Memory is O(Tq * Tk) per head; this is a reference, not a kernel.
"""

from __future__ import annotations

import functools
import math

import torch

from mixarch.kernels.dispatch import call
from mixarch.ops.infllm_v2.compress import C2_FACTOR, compress_keys, num_compressed
from mixarch.ops.infllm_v2.select import block_scores, select_blocks, stage1_scores
from mixarch.ops.softmax import _check, attention_mask, softmax_attention


def check_forcing(init_blocks: int, local_blocks: int | None) -> None:
    """ValueError unless ``init_blocks >= 0`` and ``local_blocks`` is None or ``>= 0``."""
    if init_blocks < 0 or (local_blocks is not None and local_blocks < 0):
        raise ValueError(f"init_blocks must be >= 0 and local_blocks None or >= 0 (got {init_blocks}, "
                         f"{local_blocks})")


def forced_blocks(t_q: int, t_k: int, *, block_size: int, init_blocks: int, local_blocks: int | None,
                  device=None) -> torch.Tensor:
    """The forced blocks of each query as int64 ``[Tq, init_blocks + local_blocks + 1]`` (``[Tq, init_blocks]``
    without local blocks), ascending, ``-1`` padded.

    Query ``i`` sits at position ``t = Tk - Tq + i`` in block ``b_t = t // block_size``; its forced blocks are
    ``b < init_blocks`` and ``b_t - local_blocks <= b <= b_t`` (the selection's forcing rule,
    :func:`~mixarch.ops.infllm_v2.select.block_scores`), all ``<= b_t``. ``local_blocks=None``: init blocks only.
    """
    n_local = -1 if local_blocks is None else local_blocks
    width = max(init_blocks + n_local + 1, 0)
    bt = (torch.arange(t_q, device=device) + (t_k - t_q)) // block_size
    w_lo = (bt - n_local).clamp(min=0) if local_blocks is not None else bt + 1  # window [w_lo, b_t]
    n_init = w_lo.clamp(max=init_blocks)  # init blocks below the window
    j = torch.arange(width, device=device)
    blk = torch.where(j < n_init[:, None], j, w_lo[:, None] + j - n_init[:, None])
    return torch.where(blk <= bt[:, None], blk, torch.full_like(blk, -1))


def with_forced_blocks(indices: torch.Tensor, t_k: int, *, block_size: int, init_blocks: int = 0,
                       local_blocks: int | None = None) -> torch.Tensor:
    """``indices`` ``[B, Hkv, Tq, n]`` joined with every query's :func:`forced_blocks`: ``[B, Hkv, Tq, F + n]``,
    the forced blocks first, then ``indices`` with the forced blocks among them replaced by ``-1`` (each block
    appears once). Without forcing (``init_blocks=0``, ``local_blocks=None``) ``indices`` itself."""
    check_forcing(init_blocks, local_blocks)
    if init_blocks == 0 and local_blocks is None:
        return indices
    t_q = indices.shape[2]
    forced = forced_blocks(t_q, t_k, block_size=block_size, init_blocks=init_blocks, local_blocks=local_blocks,
                           device=indices.device).to(indices.dtype)
    bt = ((torch.arange(t_q, device=indices.device) + (t_k - t_q)) // block_size)[:, None]
    in_forcing = indices < init_blocks
    if local_blocks is not None:
        in_forcing = in_forcing | (indices >= bt - local_blocks)
    is_forced = (indices >= 0) & (indices <= bt) & in_forcing
    free = torch.where(is_forced, torch.full_like(indices, -1), indices)
    return torch.cat([forced.expand(*indices.shape[:-1], forced.shape[-1]), free], dim=-1)


def selected_token_mask(indices: torch.Tensor, t_k: int, *, block_size: int) -> torch.Tensor:
    """Boolean ``[B, Hkv, Tq, Tk]``: key ``i`` lies in a selected block of the query and ``i <= t``.

    ``indices`` is :func:`select_blocks`' ``[B, Hkv, Tq, topk]`` format (``-1`` entries ignored).
    """
    t_q = indices.shape[2]
    tokens = selection_mask(indices, math.ceil(t_k / block_size)).repeat_interleave(block_size, dim=-1)[..., :t_k]
    return tokens & attention_mask(t_q, t_k, device=indices.device)


def sparse_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, *,
                           block_size: int, scale: float | None = None, init_blocks: int = 0,
                           local_blocks: int | None = None) -> torch.Tensor:
    """Stage 2: exact softmax attention of every query head over the causal tokens of its group's blocks.

    Args:
        q: ``[B, Tq, Hq, D]``; k, v: ``[B, Tk, Hkv, D(v)]``; queries are the last ``Tq`` positions.
        indices: ``[B, Hkv, Tq, n]`` int block indices, ``-1`` = none; query head ``h`` uses KV group
            ``h // (Hq / Hkv)``. Every query must have a selected block containing a key at or before it
            (its own block always is, when selected by :func:`infllm_v2_attention`), else its row is NaN.
        init_blocks, local_blocks: forced blocks attended besides ``indices`` (:func:`forced_blocks`: blocks
            ``b < init_blocks`` and ``b_t - local_blocks <= b <= b_t``; ``None``: no local blocks). A block both
            forced and in ``indices`` counts once. :func:`infllm_v2_attention` passes its forcing geometry when
            every forced block is selected anyway, which lets kernels run the forced blocks, common to all
            queries of a block, as dense tiles.
    Returns:
        ``[B, Tq, Hq, Dv]`` in ``q``'s dtype, computed in fp32 (fp64 for fp64 inputs); differentiable in
        ``q``, ``k``, ``v``.
    """
    _check(q, k, v)
    b, t_q, h_q, d = q.shape
    t_k, h_kv = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    indices = with_forced_blocks(indices, t_k, block_size=block_size, init_blocks=init_blocks,
                                 local_blocks=local_blocks)
    mask = selected_token_mask(indices, t_k, block_size=block_size)  # [B, Hkv, Tq, Tk]
    qg = q.to(acc).reshape(b, t_q, h_kv, h_q // h_kv, d)
    logits = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.to(acc)) * scale
    logits = logits.masked_fill(~mask.unsqueeze(2), float("-inf"))
    o = torch.einsum("bhgqk,bkhd->bqhgd", torch.softmax(logits, dim=-1), v.to(acc))
    return o.reshape(b, t_q, h_q, v.shape[-1]).to(q.dtype)


def _check_compressed(name: str, c: torch.Tensor, k: torch.Tensor, n: int) -> None:
    want = (k.shape[0], n, k.shape[2], k.shape[3])
    if tuple(c.shape) != want:
        raise ValueError(f"{name} has shape {tuple(c.shape)}, expected {want} for {k.shape[1]} keys")


def infllm_v2_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_size: int = 64,
                        kernel_size: int = 32, kernel_stride: int = 16, init_blocks: int = 1,
                        local_blocks: int = 32, topk: int = 96, dense_len: int = 8192, scale: float | None = None,
                        exact_normalizer: bool = True, compressed_k: torch.Tensor | None = None,
                        compressed_k2: torch.Tensor | None = None, return_indices: bool = False):
    """InfLLM-V2 (MiniCPM4 / MiniCPM-SALA sparse layer) attention.

    Args:
        q: ``[B, Tq, Hq, D]``; k, v: ``[B, Tk, Hkv, D(v)]``, any ``G = Hq / Hkv``, ``Tk >= Tq``; queries are the
            last ``Tq`` positions (prefill ``Tq = Tk``, chunked prefill, decode ``Tq = 1`` share the rules).
        block_size, kernel_size, kernel_stride: selection block and compressed-key window / stride
            (``block_size`` and ``kernel_size`` multiples of ``kernel_stride``; SALA: 64, 32, 16).
        init_blocks, local_blocks: forced blocks ``b < init_blocks`` and ``b_t - local_blocks <= b <= b_t``
            (``local_blocks + 1`` blocks, as the released kernel; SALA: 1 and 2048 / 64 = 32).
        topk: blocks per query including the forced ones (SALA: 64 + 32 = 96).
        dense_len: ``Tk < dense_len`` -> ordinary causal softmax attention (SALA: 8192). The switch depends
            on ``Tk`` only, so a prefill with ``Tk >= dense_len`` is sparse for all its queries whereas decode
            is dense for positions ``t < dense_len - 1``, exactly as in the released model.
        scale: logit scale of both stages, default ``D ** -0.5``.
        exact_normalizer: stage-1 softmax over the visible C1 keys; False = the released approximation with
            the log-sum-exp over the coarse C2 keys (``4 * kernel_size`` / ``4 * kernel_stride``).
        compressed_k, compressed_k2: optional precomputed C1 / C2 keys of all ``Tk`` keys
            (``[B, Nc, Hkv, D]``, e.g. :class:`CompressedKeyCache` ``.c1`` / ``.c2``); they must equal
            :func:`compress_keys` of ``k`` (only their shape is checked).
        return_indices: also return the selected blocks, int64 ``[B, Hkv, Tq, topk]``: per query the block
            indices in ascending order, then ``-1`` padding (``min(topk, b_t + 1)`` valid entries); ``None``
            on the dense path.
    Returns:
        ``o`` ``[B, Tq, Hq, Dv]`` in ``q``'s dtype, or ``(o, indices)``. Selection runs without gradient;
        gradients flow through stage 2 to ``q``, ``k``, ``v``.

    Exact selection semantics, and where they follow the released code rather than the paper: see
    :mod:`mixarch.ops.infllm_v2.select`.
    """
    _check(q, k, v)
    t_q, t_k, d = q.shape[1], k.shape[1], q.shape[-1]
    if t_k < t_q:
        raise ValueError(f"need at least as many keys ({t_k}) as queries ({t_q})")
    if block_size < 1 or kernel_stride < 1 or kernel_size < 1:
        raise ValueError("block_size, kernel_size and kernel_stride must be >= 1")
    if block_size % kernel_stride or kernel_size % kernel_stride:
        raise ValueError(f"block_size ({block_size}) and kernel_size ({kernel_size}) must be multiples of "
                         f"kernel_stride ({kernel_stride})")
    if topk < 1 or init_blocks < 0 or local_blocks < 0:
        raise ValueError(f"need topk >= 1, init_blocks >= 0, local_blocks >= 0 "
                         f"(got {topk}, {init_blocks}, {local_blocks})")
    scale = d ** -0.5 if scale is None else scale
    if t_k < dense_len:
        o = softmax_attention(q, k, v, scale=scale)
        return (o, None) if return_indices else o

    with torch.no_grad():
        if compressed_k is None:
            compressed_k = compress_keys(k.detach(), kernel_size, kernel_stride)
        _check_compressed("compressed_k", compressed_k, k, num_compressed(t_k, kernel_size, kernel_stride))
        if not exact_normalizer:
            l2, s2 = C2_FACTOR * kernel_size, C2_FACTOR * kernel_stride
            if compressed_k2 is None:
                compressed_k2 = compress_keys(k.detach(), l2, s2)
            _check_compressed("compressed_k2", compressed_k2, k, num_compressed(t_k, l2, s2))
    geometry = dict(block_size=block_size, kernel_size=kernel_size, kernel_stride=kernel_stride,
                    init_blocks=init_blocks, local_blocks=local_blocks, topk=topk, scale=scale,
                    exact_normalizer=exact_normalizer)
    if t_q == 1 and not return_indices and not needs_grad(q, k, v):
        return call("infllm_v2_decode", q, k, v, compressed_k, compressed_k2, **geometry)[0]
    o, indices = _select_and_attend(q, k, v, compressed_k, compressed_k2, geometry)
    return (o, indices) if return_indices else o


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would record a call on ``tensors`` (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _select_and_attend(q, k, v, compressed_k, compressed_k2, geometry: dict, *, select=None,
                       attend=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(o, indices)``: the selection, then stage 2; by default the ops ``infllm_v2_select`` and
    ``infllm_v2_sparse_attention``, each on its chosen backend."""
    select = select or functools.partial(call, "infllm_v2_select")
    attend = attend or functools.partial(call, "infllm_v2_sparse_attention")
    with torch.no_grad():
        indices = select(q, compressed_k, compressed_k2, k.shape[1], **geometry)
    g = geometry
    o = attend(q, k, v, indices, block_size=g["block_size"], scale=g["scale"],
               **stage2_forcing(g["init_blocks"], g["local_blocks"], g["topk"]))
    return o, indices


def stage2_forcing(init_blocks: int, local_blocks: int, topk: int) -> dict:
    """The forcing geometry stage 2 is told: every forced block is among the selected ones when top-k has room
    for them all, so stage 2 may then treat them as forced (kernels run these blocks, shared by all queries of a
    block, as dense tiles); else none."""
    return dict(init_blocks=init_blocks, local_blocks=local_blocks) if topk >= init_blocks + local_blocks + 1 else {}


def selection_mask(indices: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Boolean ``[..., n_blocks]`` of int block indices ``[..., n]`` (``-1`` entries ignored)."""
    sel = torch.zeros(indices.shape[:-1] + (n_blocks + 1,), dtype=torch.bool, device=indices.device)
    sel.scatter_(-1, torch.where((indices < 0) | (indices >= n_blocks), n_blocks, indices), True)
    return sel[..., :n_blocks]


def mask_indices(selected: torch.Tensor, topk: int) -> torch.Tensor:
    """Inverse of :func:`selection_mask`: int64 ``[..., topk]``, the selected blocks ascending, then ``-1``
    (at most ``topk`` per row)."""
    nb = selected.shape[-1]
    blocks = torch.arange(nb, device=selected.device).expand(selected.shape)
    ordered = torch.sort(torch.where(selected, blocks, nb), dim=-1).values
    ordered = torch.nn.functional.pad(ordered, (0, max(topk - nb, 0)), value=nb)[..., :topk]
    return torch.where(ordered == nb, -1, ordered)


def reference_infllm_v2_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compressed_k: torch.Tensor,
                               compressed_k2: torch.Tensor | None, *, block_size: int, kernel_size: int,
                               kernel_stride: int, init_blocks: int, local_blocks: int, topk: int, scale: float,
                               exact_normalizer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse path of :func:`infllm_v2_attention` for queries ``q`` ``[B, Tq, Hq, D]`` at the last ``Tq``
    positions of ``k``, ``v`` (decode: ``Tq = 1``), with the keys' C1 / C2 compressed forms: stage 1 + top-k
    (:func:`reference_infllm_v2_select`, same keyword arguments), then stage 2 (:func:`sparse_block_attention`).

    Returns ``(o [B, Tq, Hq, Dv], selected [B, Hkv, Tq, nb] bool)``: the output and the selected blocks as a
    mask (:func:`selection_mask`; :func:`mask_indices` gives the selection's index rows back).
    """
    geometry = dict(block_size=block_size, kernel_size=kernel_size, kernel_stride=kernel_stride,
                    init_blocks=init_blocks, local_blocks=local_blocks, topk=topk, scale=scale,
                    exact_normalizer=exact_normalizer)
    o, indices = _select_and_attend(q, k, v, compressed_k, compressed_k2, geometry,
                                    select=reference_infllm_v2_select, attend=sparse_block_attention)
    return o, selection_mask(indices, math.ceil(k.shape[1] / block_size))


def composed_infllm_v2_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compressed_k: torch.Tensor,
                              compressed_k2: torch.Tensor | None, *, block_size: int, kernel_size: int,
                              kernel_stride: int, init_blocks: int, local_blocks: int, topk: int, scale: float,
                              exact_normalizer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`reference_infllm_v2_decode` through the dispatcher: ``infllm_v2_select`` then
    ``infllm_v2_sparse_attention``, each on its chosen backend (the ``reference`` backend of
    ``infllm_v2_decode``: a kernel package that registers only those two ops still serves decode steps)."""
    geometry = dict(block_size=block_size, kernel_size=kernel_size, kernel_stride=kernel_stride,
                    init_blocks=init_blocks, local_blocks=local_blocks, topk=topk, scale=scale,
                    exact_normalizer=exact_normalizer)
    o, indices = _select_and_attend(q, k, v, compressed_k, compressed_k2, geometry)
    return o, selection_mask(indices, math.ceil(k.shape[1] / block_size))


def reference_infllm_v2_select(q: torch.Tensor, compressed_k: torch.Tensor, compressed_k2: torch.Tensor | None,
                               t_k: int, *, block_size: int, kernel_size: int, kernel_stride: int, init_blocks: int,
                               local_blocks: int, topk: int, scale: float, exact_normalizer: bool) -> torch.Tensor:
    """Stage 1 + block max-pool + forcing + top-k: int64 ``[B, Hkv, Tq, topk]`` (see :func:`select_blocks`).

    ``q`` ``[B, Tq, Hq, D]`` are the last ``Tq`` of ``t_k`` positions; ``compressed_k`` (C1) and, for the
    approximate normalizer, ``compressed_k2`` (C2) are ``[B, Nc, Hkv, D]``.
    """
    s = stage1_scores(q, compressed_k, compressed_k2, t_k, kernel_size=kernel_size, kernel_stride=kernel_stride,
                      scale=scale, exact_normalizer=exact_normalizer)
    scores, candidate = block_scores(s, t_k, block_size=block_size, kernel_size=kernel_size,
                                     kernel_stride=kernel_stride, init_blocks=init_blocks, local_blocks=local_blocks)
    return select_blocks(scores, candidate, topk)
