"""InfLLM-V2 stage 2 in Triton: exact softmax attention over each query's selected key blocks, with backward.

Same function as :func:`mixarch.ops.infllm_v2.attention.sparse_block_attention`. Layouts: ``q`` ``[B, Tq, Hq, D]``,
``k`` / ``v`` ``[B, Tk, Hkv, D(v)]``, ``indices`` ``[B, Hkv, Tq, n]`` (distinct block indices per query, any
order, ``-1`` = none; query head ``h`` uses KV group ``h // G``).

Forward (``_fwd_kernel``): one program per (query, KV head, slot split). The ``G`` query heads of the group
are one ``[G, D]`` tile (padded to 16 rows for ``tl.dot``); for each selected block it loads the
``[block, D]`` key and value tiles once for all ``G`` heads, masks the keys after the query (its own block)
and ``-1`` slots, and updates an online softmax in fp32; a masked slot issues no memory traffic and the loop
has no branch, so the loads pipeline. Prefill runs one split (output and log2-sum-exp written directly);
decode (few queries) splits the slots over programs and ``_combine_kernel`` merges the partial results.
Traffic: ``n * block * (D + Dv)`` key/value elements per (query, KV head); FLOPs ``2 * G * n * block * (D + Dv)``.

Backward (dk / dv by a transposed index, no atomics on the common path):
- ``_dq_kernel``: one program per (query, KV head), the forward's gather again, computes
  ``delta = rowsum(o * do)`` and ``dq``.
- the selection is inverted into CSR form with one ``torch.sort`` of the (KV head, block, query) keys, and
  every block's list of selecting queries is cut into work items of at most ``chunk`` queries
  (so that the init block, which every query selects, does not serialize the launch);
- ``_dkv_kernel``: one program per work item keeps the block's ``K``, ``V`` tiles and ``dk``, ``dv``
  accumulators in registers and gathers its queries ``BQ`` at a time as a ``[BQ*G, D]`` tile (all heads of a
  query are contiguous). A block with one work item stores its gradients; the items of a block selected by
  more than ``chunk`` queries add theirs into the fp32 buffer atomically (order-dependent rounding there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from mixarch.kernels.triton.infllm_v2.common import LOG2E, as_fp32, dot_args, launch, num_sms, pow2


@triton.jit
def _tile(ptr, rows, row_ok, cols, col_ok, N: tl.constexpr, UPCAST: tl.constexpr):
    """``[len(rows), len(cols)]`` tile of a row-major ``[*, N]`` tensor (zeros outside)."""
    x = tl.load(ptr + rows.to(tl.int64)[:, None] * N + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _n_slots(idx_ptr, N_IDX: tl.constexpr, N_IDXP: tl.constexpr):
    """Slots to visit: the valid ones when they come first (the selection's ascending, ``-1``-padded rows; the
    padding then costs nothing), else all ``N_IDX``."""
    offs = tl.arange(0, N_IDXP)
    blk = tl.load(idx_ptr + offs, mask=offs < N_IDX, other=-1)
    n_valid = tl.sum((blk >= 0).to(tl.int32), 0)
    first_pad = tl.min(tl.where(blk < 0, offs, N_IDX), 0)
    return tl.where(first_pad >= n_valid, n_valid, N_IDX)


@triton.jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, idx_ptr, o_ptr, lse_ptr, acc_ptr, m_ptr, l_ptr, qk_scale, T_Q, T_K,
                SLOTS, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GM: tl.constexpr,
                N_IDX: tl.constexpr, N_IDXP: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr,
                BDV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr, SPLIT: tl.constexpr, UPCAST: tl.constexpr,
                PREC: tl.constexpr):
    i_t, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale = as_fp32(qk_scale)
    g = tl.arange(0, GM)
    row_ok = g < G
    pos = T_K - T_Q + i_t
    offs_d, offs_v, offs_s = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BSP)
    q_rows = (i_b * T_Q + i_t) * HQ + i_h * G + g
    q = _tile(q_ptr, q_rows, row_ok, offs_d, offs_d < D, D, UPCAST)
    m = tl.full([GM], float("-inf"), tl.float32)
    den = tl.zeros([GM], tl.float32)
    acc = tl.zeros([GM, BDV], tl.float32)
    idx_base = ((i_b * HKV + i_h) * T_Q + i_t).to(tl.int64) * N_IDX
    s_lo = i_s * SLOTS
    for slot in range(s_lo, tl.minimum(s_lo + SLOTS, _n_slots(idx_ptr + idx_base, N_IDX, N_IDXP))):
        blk = tl.load(idx_ptr + idx_base + slot)
        kpos = blk * BS + offs_s
        key_ok = (blk >= 0) & (offs_s < BS) & (kpos <= pos)
        kv_rows = (i_b * T_K + kpos) * HKV + i_h
        k = _tile(k_ptr, kv_rows, key_ok, offs_d, offs_d < D, D, UPCAST)
        v = _tile(v_ptr, kv_rows, key_ok, offs_v, offs_v < DV, DV, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        s = tl.where(key_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        den = den * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m = m_new
    if SPLIT:
        part = (i_bh * tl.num_programs(1) + i_s).to(tl.int64) * T_Q + i_t
        tl.store(m_ptr + part * GM + g, m)
        tl.store(l_ptr + part * GM + g, den)
        tl.store(acc_ptr + (part * GM + g)[:, None] * BDV + offs_v[None, :], acc)
    else:
        tl.store(o_ptr + q_rows.to(tl.int64)[:, None] * DV + offs_v[None, :],
                 (acc / den[:, None]).to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_v < DV)[None, :])
        tl.store(lse_ptr + q_rows, m + tl.log2(den), mask=row_ok)


@triton.jit
def _combine_kernel(acc_ptr, m_ptr, l_ptr, o_ptr, lse_ptr, T_Q, NSPLIT, HQ: tl.constexpr, HKV: tl.constexpr,
                    G: tl.constexpr, GM: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr, NSP: tl.constexpr,
                    DC: tl.constexpr):
    """Merge the ``NSPLIT`` partial softmax results of one (query, KV head), value columns ``DC * program_id(2)``
    on: every split is loaded at once (``[NSP, GM, DC]``), no dependent chain of loads."""
    i_t, i_bh, i_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    g = tl.arange(0, GM)
    sp = tl.arange(0, NSP)
    part = ((i_bh * NSPLIT + sp).to(tl.int64) * T_Q + i_t)[:, None] * GM + g[None, :]  # [NSP, GM]
    sp_ok = (sp < NSPLIT)[:, None]
    m_s = tl.load(m_ptr + part, mask=sp_ok, other=float("-inf"))
    m = tl.max(m_s, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(m_s - m_safe[None, :])
    den = tl.sum(w * tl.load(l_ptr + part, mask=sp_ok, other=0.0), 0)
    offs_v = i_c * DC + tl.arange(0, DC)
    acc = tl.load(acc_ptr + part[:, :, None] * BDV + offs_v[None, None, :], mask=sp_ok[:, :, None], other=0.0)
    o = tl.sum(acc * w[:, :, None], 0) / den[:, None]
    q_rows = (i_b * T_Q + i_t) * HQ + i_h * G + g
    row_ok = g < G
    tl.store(o_ptr + q_rows.to(tl.int64)[:, None] * DV + offs_v[None, :], o.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (offs_v < DV)[None, :])
    if i_c == 0:
        tl.store(lse_ptr + q_rows, m + tl.log2(den), mask=row_ok)


@triton.jit
def _dq_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, idx_ptr, dq_ptr, delta_ptr, qk_scale, scale, T_Q, T_K,
               HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GM: tl.constexpr, N_IDX: tl.constexpr,
               N_IDXP: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr,
               BSP: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale, scale = as_fp32(qk_scale), as_fp32(scale)
    g = tl.arange(0, GM)
    row_ok = g < G
    pos = T_K - T_Q + i_t
    offs_d, offs_v, offs_s = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BSP)
    q_rows = (i_b * T_Q + i_t) * HQ + i_h * G + g
    q = _tile(q_ptr, q_rows, row_ok, offs_d, offs_d < D, D, UPCAST)
    do = _tile(do_ptr, q_rows, row_ok, offs_v, offs_v < DV, DV, UPCAST)
    o = _tile(o_ptr, q_rows, row_ok, offs_v, offs_v < DV, DV, UPCAST)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(delta_ptr + q_rows, delta, mask=row_ok)
    lse = tl.load(lse_ptr + q_rows, mask=row_ok, other=0.0)
    dq = tl.zeros([GM, BD], tl.float32)
    idx_base = ((i_b * HKV + i_h) * T_Q + i_t).to(tl.int64) * N_IDX
    for slot in range(0, _n_slots(idx_ptr + idx_base, N_IDX, N_IDXP)):
        blk = tl.load(idx_ptr + idx_base + slot)
        kpos = blk * BS + offs_s
        key_ok = (blk >= 0) & (offs_s < BS) & (kpos <= pos)
        kv_rows = (i_b * T_K + kpos) * HKV + i_h
        k = _tile(k_ptr, kv_rows, key_ok, offs_d, offs_d < D, D, UPCAST)
        v = _tile(v_ptr, kv_rows, key_ok, offs_v, offs_v < DV, DV, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        p = tl.where(key_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PREC)
    tl.store(dq_ptr + q_rows.to(tl.int64)[:, None] * D + offs_d[None, :], (dq * scale).to(dq_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d < D)[None, :])


@triton.jit
def _dkv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, csr_q_ptr, blk_off_ptr, item_off_ptr,
                item_blk_ptr, dk_ptr, dv_ptr, qk_scale, scale, T_Q, T_K, NB, N_BLK, CHUNK,
                HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BQ: tl.constexpr,
                D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr,
                BSP: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr):
    """dk, dv of one work item: up to ``CHUNK`` of the queries that selected one (batch, KV head, block)."""
    item = tl.program_id(0)
    gb = tl.load(item_blk_ptr + item)  # (b * HKV + h) * NB + block, N_BLK past the last item
    if gb >= N_BLK:
        return
    i_bh, blk = gb // NB, gb % NB
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale, scale = as_fp32(qk_scale), as_fp32(scale)
    first_item = tl.load(item_off_ptr + gb)
    shared = tl.load(item_off_ptr + gb + 1) - first_item > 1
    q_lo = tl.load(blk_off_ptr + gb) + (item - first_item) * CHUNK
    q_hi = tl.minimum(q_lo + CHUNK, tl.load(blk_off_ptr + gb + 1))
    offs_d, offs_v, offs_s = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BSP)
    kpos = blk * BS + offs_s
    key_ok = (offs_s < BS) & (kpos < T_K)
    kv_rows = (i_b * T_K + kpos) * HKV + i_h
    k = _tile(k_ptr, kv_rows, key_ok, offs_d, offs_d < D, D, UPCAST)
    v = _tile(v_ptr, kv_rows, key_ok, offs_v, offs_v < DV, DV, UPCAST)
    dk = tl.zeros([BSP, BD], tl.float32)
    dv = tl.zeros([BSP, BDV], tl.float32)
    cols = tl.arange(0, BQ * GP)
    c_q, c_g = cols // GP, cols % GP
    for start in range(q_lo, q_hi, BQ):
        slot = start + c_q
        in_item = slot < q_hi
        qi = tl.load(csr_q_ptr + slot, mask=in_item, other=0)
        col_ok = in_item & (c_g < G)
        q_rows = (i_b * T_Q + qi) * HQ + i_h * G + c_g
        q = _tile(q_ptr, q_rows, col_ok, offs_d, offs_d < D, D, UPCAST)
        do = _tile(do_ptr, q_rows, col_ok, offs_v, offs_v < DV, DV, UPCAST)
        lse = tl.load(lse_ptr + q_rows, mask=col_ok, other=0.0)
        delta = tl.load(delta_ptr + q_rows, mask=col_ok, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale  # [BSP, BQ*GP]
        ok = key_ok[:, None] & col_ok[None, :] & (kpos[:, None] <= (T_K - T_Q + qi)[None, :])
        pt = tl.where(ok, tl.exp2(st - lse[None, :]), 0.0)
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=PREC)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(q.dtype), q, dk, input_precision=PREC)
    dk_ptrs = dk_ptr + kv_rows.to(tl.int64)[:, None] * D + offs_d[None, :]
    dv_ptrs = dv_ptr + kv_rows.to(tl.int64)[:, None] * DV + offs_v[None, :]
    dk_ok = key_ok[:, None] & (offs_d < D)[None, :]
    dv_ok = key_ok[:, None] & (offs_v < DV)[None, :]
    if shared:
        tl.atomic_add(dk_ptrs, dk * scale, mask=dk_ok)
        tl.atomic_add(dv_ptrs, dv, mask=dv_ok)
    else:
        tl.store(dk_ptrs, dk * scale, mask=dk_ok)
        tl.store(dv_ptrs, dv, mask=dv_ok)


def _geometry(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> dict:
    hq, hkv = q.shape[2], k.shape[2]
    g = hq // hkv
    return dict(HQ=hq, HKV=hkv, G=g, D=q.shape[-1], BD=pow2(q.shape[-1], 16), DV=v.shape[-1],
                BDV=pow2(v.shape[-1], 16), BS=block_size, BSP=pow2(block_size, 16), **dot_args(q.dtype))


@triton_op("mixarch::infllm_v2_sparse_fwd_triton", mutates_args=())
def sparse_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, block_size: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(o [B, Tq, Hq, Dv], lse [B, Tq, Hq] fp32, log2 domain)``; see the module doc."""
    b, t_q, hq, _ = q.shape
    t_k, hkv = k.shape[1], k.shape[2]
    n_idx = indices.shape[-1]
    geo = _geometry(q, k, v, block_size)
    gm = pow2(geo["G"], 16)
    o = torch.empty((b, t_q, hq, v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, t_q, hq), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, lse
    nsplit = min(triton.cdiv(2 * num_sms(q.device), t_q * b * hkv), triton.cdiv(n_idx, 2)) if n_idx else 1
    slots = triton.cdiv(max(n_idx, 1), nsplit)
    nsplit = triton.cdiv(max(n_idx, 1), slots)
    split = nsplit > 1
    part_shape = (b * hkv * nsplit * t_q, gm) if split else (1, 1)
    m_part = torch.empty(part_shape, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    acc = torch.empty((*part_shape, geo["BDV"]) if split else (1,), dtype=torch.float32, device=q.device)
    big = q.is_cuda and gm * geo["BD"] >= 64 * 128
    wrap_triton(_fwd_kernel)[(t_q, nsplit, b * hkv)](
        q, k, v, indices, o, lse, acc, m_part, l_part, scale * LOG2E, t_q, t_k, slots, GM=gm, N_IDX=n_idx,
        N_IDXP=pow2(n_idx), SPLIT=split, **geo, **launch(8 if big else 4, 3))
    if split:
        nsp = pow2(nsplit)
        dc = max(1, min(geo["BDV"], 8192 // (nsp * gm)))
        wrap_triton(_combine_kernel)[(t_q, b * hkv, geo["BDV"] // dc)](
            acc, m_part, l_part, o, lse, t_q, nsplit, HQ=hq, HKV=hkv, G=geo["G"], GM=gm, DV=geo["DV"],
            BDV=geo["BDV"], NSP=nsp, DC=dc, **launch(4))
    return o, lse


def _block_csr(indices: torch.Tensor, t_k: int, block_size: int, chunk: int):
    """Invert the selection: ``(csr_q, blk_off, item_off, item_blk)``.

    ``csr_q`` int32: query indices sorted by (batch, KV head, block), then query; ``blk_off`` ``[N_BLK + 1]``:
    where each of the ``N_BLK = B * Hkv * nb`` blocks' queries start; ``item_off`` ``[N_BLK + 1]``: each
    block's first work item (``ceil(count / chunk)`` items); ``item_blk``: the block of every work item up to a
    static bound (``N_BLK`` past the last one). Only (query, block) pairs with a key at or before the query
    are kept. All shapes are static (no host synchronization).
    """
    b, hkv, t_q, n_idx = indices.shape
    nb = triton.cdiv(t_k, block_size)
    n_blk = b * hkv * nb
    dev = indices.device
    query = torch.arange(t_q, device=dev)
    pos = query + (t_k - t_q)
    valid = (indices >= 0) & (indices * block_size <= pos[:, None])
    bh = torch.arange(b * hkv, device=dev).view(b, hkv, 1, 1)
    key = torch.where(valid, (bh * nb + indices) * t_q + query[:, None], n_blk * t_q)
    key = torch.sort(key.flatten()).values
    csr_q = (key % t_q).to(torch.int32)
    counts = torch.zeros(n_blk + 1, dtype=torch.int64, device=dev).scatter_add_(0, key // t_q,
                                                                               torch.ones_like(key))[:n_blk]
    zero = counts.new_zeros(1)
    blk_off = torch.cat([zero, torch.cumsum(counts, 0)])
    item_off = torch.cat([zero, torch.cumsum((counts + chunk - 1) // chunk, 0)])
    max_items = n_blk + triton.cdiv(key.numel(), chunk)
    item_blk = torch.searchsorted(item_off, torch.arange(max_items, device=dev), right=True) - 1
    return csr_q, blk_off, item_off, item_blk


@triton_op("mixarch::infllm_v2_sparse_bwd_triton", mutates_args=())
def sparse_bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, o: torch.Tensor,
                  lse: torch.Tensor, do: torch.Tensor, block_size: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of :func:`sparse_fwd_op`; see the module doc."""
    b, t_q, hq, _ = q.shape
    t_k, hkv = k.shape[1], k.shape[2]
    n_idx = indices.shape[-1]
    geo = _geometry(q, k, v, block_size)
    gm, gp = pow2(geo["G"], 16), pow2(geo["G"])
    dq = torch.empty_like(q)
    delta = torch.empty((b, t_q, hq), dtype=torch.float32, device=q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
    if q.numel() == 0 or n_idx == 0:
        return dq.zero_(), dk.to(k.dtype), dv.to(v.dtype)
    big = q.is_cuda and gm * geo["BD"] >= 64 * 128
    wrap_triton(_dq_kernel)[(t_q, b * hkv)](
        q, k, v, o, do, lse, indices, dq, delta, scale * LOG2E, scale, t_q, t_k, GM=gm, N_IDX=n_idx,
        N_IDXP=pow2(n_idx), **geo, **launch(8 if big else 4, 3))
    chunk = 256 if q.is_cuda else 3  # small on CPU so that tests reach the shared-block (atomic) path
    bq = max(16 // gp, 64 // gp if q.is_cuda else 1)
    csr_q, blk_off, item_off, item_blk = _block_csr(indices, t_k, block_size, chunk)
    wrap_triton(_dkv_kernel)[(item_blk.numel(),)](
        q, k, v, do, lse, delta, csr_q, blk_off, item_off, item_blk, dk, dv, scale * LOG2E, scale, t_q, t_k,
        triton.cdiv(t_k, block_size), blk_off.numel() - 1, chunk, GP=gp, BQ=bq, **geo, **launch(8, 2))
    return dq, dk.to(k.dtype), dv.to(v.dtype)


def _setup_context(ctx, inputs, output):
    q, k, v, indices, block_size, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, indices, o, lse)
    ctx.block_size, ctx.scale = block_size, scale


def _backward(ctx, do, _dlse):
    q, k, v, indices, o, lse = ctx.saved_tensors
    dq, dk, dv = sparse_bwd_op(q, k, v, indices, o, lse, do.contiguous(), ctx.block_size, ctx.scale)
    return dq, dk, dv, None, None, None


sparse_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def triton_sparse_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, *,
                                  block_size: int, scale: float | None = None) -> torch.Tensor:
    """Triton ``infllm_v2_sparse_attention``: ``[B, Tq, Hq, Dv]`` in ``q``'s dtype, differentiable in q, k, v.

    Same arguments as :func:`mixarch.ops.infllm_v2.attention.sparse_block_attention`; the block indices of a
    query must be distinct. Needs :func:`supports_sparse`.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o, _ = sparse_fwd_op(q.contiguous(), k.contiguous(), v.contiguous(), indices.contiguous(), block_size,
                         float(scale))
    return o
