"""InfLLM-V2 stage 2 in Triton: exact softmax attention over each query's selected key blocks, with backward.

Same function as :func:`mixarch.ops.infllm_v2.attention.sparse_block_attention`. Layouts: ``q`` ``[B, Tq, Hq, D]``,
``k`` / ``v`` ``[B, Tk, Hkv, D(v)]``, ``indices`` ``[B, Hkv, Tq, n]`` (distinct block indices per query, any
order, ``-1`` = none; query head ``h`` uses KV group ``h // G``), plus the forced blocks (``init_blocks``,
``local_blocks``): attended besides ``indices``, counted once when also there.

Forward, prefill (a ``[TOKS * GP, D]`` tile needs at least 16 rows):
- ``_window_kernel``: the forced blocks (init + local window) are the same for all queries of a block, so they
  run as dense tiles of ``TOKS`` consecutive queries x the ``G`` heads of a KV group (:data:`WINDOW_ROWS`), flash-attention
  style, causal in the queries' own block only; writes a partial ``o`` (fp32) and log2-sum-exp. The blocks
  before the own one come by TMA for eager calls where :func:`_tma_window` allows it (:data:`TMA_WINDOW`; the
  same tiles in the same order as the per-thread loads, so the same result).
- ``_fwd_kernel``: one program per (query, KV head); the ``G`` query heads are one ``[G, D]`` tile (padded to
  16 rows for ``tl.dot``). It starts from the window's partial result and gathers the free blocks: for each it
  loads the ``[block, D]`` key and value tiles once for all ``G`` heads, masks the keys after the query, and
  updates an online softmax in fp32. A row from the selection (ascending, ``-1`` padded) holds its free blocks
  in one contiguous run of slots, so forced and padding slots cost nothing; other rows visit every slot, the
  forced and ``-1`` ones masked (no memory traffic, no branch: the loads pipeline). Where
  :func:`_tma_gathers` allows it (eager calls on Hopper or newer, or the interpreter), the key and value tiles
  come by TMA through tensor descriptors instead of per-thread loads (:data:`TMA_GATHERS`); the blocks it visits
  then hold no key after the query that is not also past the keys (read as zeros), so the two paths give
  identical results.
Few (query, KV head) pairs (under ``2 * SMs``: decode, short chunks): ``_fwd_kernel`` alone, the forced blocks
first as virtual slots, the slots split over programs and merged by ``_combine_kernel``; also without the split
when the window tile would have under 16 rows (e.g. an odd ``block_size`` with a small group). Traffic of a gather: ``block * (D + Dv)`` key/value elements per
(query, KV head, block); FLOPs ``2 * G * block * (D + Dv)``.

Backward:
- ``_dq_window_kernel`` (the forced blocks' share of ``dq``, dense tiles; also ``delta = rowsum(o * do)``), then
  ``_dq_kernel`` (the forward's gathers again, adding the free blocks' share; TMA as in the forward);
- ``_dkv_window_kernel``: per key block, its dk / dv from the queries whose local window holds it (the queries
  of ``local_blocks + 1`` consecutive blocks), as dense query tiles; stores;
- the remaining (query, block) pairs (init and free blocks) are inverted into CSR form with one ``torch.sort``
  of the (KV head, block, query) keys, and every block's list of selecting queries is cut into work items of at
  most ``chunk`` queries (so that the init block, which every query selects, does not serialize the launch);
  ``_dkv_kernel``: one program per work item keeps the block's ``K``, ``V`` tiles and ``dk``, ``dv``
  accumulators in registers and gathers its queries ``BQ`` at a time as a ``[BQ*G, D]`` tile (all heads of a
  query are contiguous). A block with one work item adds its gradients to the window's; the items of a block
  selected by more than ``chunk`` queries add theirs atomically (order-dependent rounding there).
Launch configurations: :data:`LAUNCH`, :data:`WINDOW_ROWS`, :data:`WINDOW_STEP` (forced blocks per key tile of the
window kernels), :data:`DKV_ROWS`, :data:`SPLIT_SLOTS` (fewest slots per program of a split forward).
Eager calls launch the kernels directly, with autograd through :class:`_EagerSparse`; traced calls (torch.compile,
make_fx, fake tensors) go through the custom ops (:func:`~mixarch.kernels.triton.launcher`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from mixarch.kernels.triton import cdiv, eager, launcher, pow2, tma_ready
from mixarch.kernels.triton.infllm_v2.common import (
    LOG2E,
    as_fp32,
    dot_args,
    launch,
    num_sms,
    row_descriptor,
)
from mixarch.kernels.triton.pdl import pdl_enabled, pdl_handoff
from mixarch.ops.infllm_v2.attention import check_forcing, forced_blocks, with_forced_blocks


@triton.jit
def _tile(ptr, rows, row_ok, cols, col_ok, N: tl.constexpr, UPCAST: tl.constexpr):
    """``[len(rows), len(cols)]`` tile of a row-major ``[*, N]`` tensor (zeros outside)."""
    x = tl.load(ptr + rows.to(tl.int64)[:, None] * N + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _forced_span(bt, INIT, LOCAL):
    """``(n_init, w_lo)``: a query in block ``bt`` has the forced blocks ``[0, n_init)`` and ``[w_lo, bt]``
    (``LOCAL < 0``: no local blocks, ``w_lo = bt + 1``)."""
    w_lo = tl.where(LOCAL >= 0, tl.maximum(bt - LOCAL, 0), bt + 1)
    return tl.minimum(INIT, w_lo), w_lo


@triton.jit
def _index_slots(idx_ptr, INIT, w_lo, N_IDX: tl.constexpr, N_IDXP: tl.constexpr, FORCING: tl.constexpr):
    """``(lo, hi)``: the slots of an index row to visit. A row whose valid entries come first (the selection's
    ascending, ``-1``-padded rows): ``[0, n_valid)``, the padding costs nothing; with forcing and an ascending
    row, only its free blocks ``INIT <= b < w_lo``, which are contiguous there. Else all ``N_IDX``."""
    offs = tl.arange(0, N_IDXP)
    blk = tl.load(idx_ptr + offs, mask=offs < N_IDX, other=-1)
    valid = blk >= 0
    n_valid = tl.sum(valid.to(tl.int32), 0)
    packed = tl.min(tl.where(valid, N_IDX, offs), 0) >= n_valid
    lo = n_valid * 0
    hi = tl.where(packed, n_valid, N_IDX)
    if FORCING:
        nxt = tl.load(idx_ptr + offs + 1, mask=offs + 1 < N_IDX, other=-1)
        ascending = packed & (tl.sum((valid & (nxt >= 0) & (nxt <= blk)).to(tl.int32), 0) == 0)
        f_lo = tl.sum((valid & (blk < INIT)).to(tl.int32), 0)
        f_hi = tl.maximum(tl.sum((valid & (blk < w_lo)).to(tl.int32), 0), f_lo)
        lo = tl.where(ascending, f_lo, lo)
        hi = tl.where(ascending, f_hi, hi)
    return lo, hi


@triton.jit
def _slot_block(idx_row_ptr, s, n_virtual, lo, bt, n_init, w_lo, INIT, FORCING: tl.constexpr):
    """Block visited at step ``s``: forced block ``s`` for ``s < n_virtual``, else index slot
    ``lo + s - n_virtual``, ``-1`` when that block is forced (it is visited as a forced block, or was, by
    :func:`_window_kernel`)."""
    from_idx = s >= n_virtual
    blk = tl.load(idx_row_ptr + lo + s - n_virtual, mask=from_idx, other=-1)
    if FORCING:
        forced = (blk >= 0) & (blk <= bt) & ((blk < INIT) | (blk >= w_lo))
        blk = tl.where(forced, -1, blk)
        blk = tl.where(from_idx, blk, tl.where(s < n_init, s, w_lo + s - n_init))
    return blk


@triton.jit
def _slot_plan(idx_ptr, i_b, i_h, i_t, pos, T_Q, INIT, LOCAL, HKV: tl.constexpr, N_IDX: tl.constexpr,
               N_IDXP: tl.constexpr, BS: tl.constexpr, FORCING: tl.constexpr, FROM_PART: tl.constexpr):
    """Blocks a gather kernel visits for query ``i_t`` of KV head ``i_h``: ``(idx_row, bt, n_init, w_lo, lo,
    n_virtual, n_steps)``, step ``s`` visiting :func:`_slot_block` ``(idx_row, s, n_virtual, lo, bt, n_init,
    w_lo, ...)``. With forcing, the forced blocks come first as virtual slots unless ``FROM_PART`` (the window
    kernels took them)."""
    idx_row = idx_ptr + ((i_b * HKV + i_h) * T_Q + i_t).to(tl.int64) * N_IDX
    bt = pos // BS
    n_init, w_lo = _forced_span(bt, INIT, LOCAL)
    lo, hi = _index_slots(idx_row, INIT, w_lo, N_IDX, N_IDXP, FORCING)
    n_virtual = lo * 0
    if FORCING and not FROM_PART:
        n_virtual += n_init + bt + 1 - w_lo
    return idx_row, bt, n_init, w_lo, lo, n_virtual, n_virtual + hi - lo


@triton.jit
def _attend(q, k, v, ok, m, den, acc, qk_scale, PREC: tl.constexpr):
    """One online-softmax step (log2 domain) of the ``[M, D]`` query tile over a ``[N, D]`` key / value tile;
    ``ok`` ``[M, N]`` (or broadcastable) marks the visible keys."""
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
    s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    den = den * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
    return m_new, den, acc


@triton.jit
def _window_tile(i_m, i_h, i_b, T_Q, T_K, INIT, LOCAL, HQ: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                 TOKS: tl.constexpr, BS: tl.constexpr):
    """Rows of window tile ``i_m``: ``TOKS`` consecutive queries of one block (``GP`` rows each, head-minor).
    Returns ``(pos, q_rows, row_ok, n_init, w_lo, n)``: absolute positions, rows of ``q`` (``[B*Tq*Hq, D]``),
    the valid rows and the tile's forced blocks ``[0, n_init) + [w_lo, w_lo + n - n_init)`` (the last one is
    the queries' own block)."""
    start = ((T_K - T_Q) // TOKS + i_m) * TOKS  # absolute position of the tile's first query
    r = tl.arange(0, TOKS * GP)
    pos = start + r // GP
    g = r % GP
    qi = pos - (T_K - T_Q)
    row_ok = (qi >= 0) & (qi < T_Q) & (g < G)
    n_init, w_lo = _forced_span(start // BS, INIT, LOCAL)
    return pos, (i_b * T_Q + qi) * HQ + i_h * G + g, row_ok, n_init, w_lo, n_init + start // BS + 1 - w_lo


@triton.jit
def _key_rows(i_b, i_h, blk, T_K, HKV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr):
    """Key block ``blk`` of KV head ``i_h``: ``(kpos, key_ok, kv_rows)`` (positions, valid keys, rows of ``k`` /
    ``v`` as ``[B*Tk*Hkv, D]``). No pointer argument: torch's mutation analysis of a traced kernel counts every
    pointer passed to a call as written when a store's address depends on the call's result."""
    offs_s = tl.arange(0, BSP)
    kpos = blk * BS + offs_s
    key_ok = (offs_s < BS) & (kpos < T_K)
    return kpos, key_ok, (i_b * T_K + kpos) * HKV + i_h


@triton.jit
def _key_block(k_ptr, v_ptr, kv_rows, key_ok, D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr,
               BDV: tl.constexpr, UPCAST: tl.constexpr):
    """The ``[BSP, BD]`` key and ``[BSP, BDV]`` value tiles of the rows of :func:`_key_rows`."""
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BDV)
    return (_tile(k_ptr, kv_rows, key_ok, offs_d, offs_d < D, D, UPCAST),
            _tile(v_ptr, kv_rows, key_ok, offs_v, offs_v < DV, DV, UPCAST))


@triton.jit
def _gathered_block(k_ptr, v_ptr, k_desc, v_desc, i_b, i_h, blk, bt, kv_rows, key_ok, D: tl.constexpr,
                    BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr,
                    UPCAST: tl.constexpr, TMA: tl.constexpr):
    """Key and value tiles of gathered block ``blk`` (:func:`_key_block`'s tiles, rows ``kv_rows``); with
    ``TMA`` through the ``[B, Tk, Hkv * D]`` tensor descriptors, where the blocks hold no key after the query
    before ``Tk`` (:func:`_tma_gathers`; keys at ``Tk`` and beyond are out of bounds: zeros). A block after the
    query's own (``blk > bt``, an index the query cannot see) or ``-1`` is read at a negative row, out of bounds:
    zeros, as the masked loads give."""
    if TMA:
        row = tl.where((blk >= 0) & (blk <= bt), blk * BS, -BS).to(tl.int32)
        k = tl.reshape(k_desc.load([i_b, row, (i_h * D).to(tl.int32)]), (BSP, BD))
        v = tl.reshape(v_desc.load([i_b, row, (i_h * DV).to(tl.int32)]), (BSP, BDV))
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        return k, v
    else:
        return _key_block(k_ptr, v_ptr, kv_rows, key_ok, D, BD, DV, BDV, UPCAST)


@triton.jit
def _block_run(k_ptr, v_ptr, k_desc, v_desc, i_b, i_h, b0, T_K, HKV: tl.constexpr, D: tl.constexpr,
               BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr,
               NBLK: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr):
    """Key and value tiles (``[NBLK * BSP, BD]``, ``[NBLK * BSP, BDV]``) of the ``NBLK`` consecutive blocks from
    ``b0``, which lie before the queries' own block (every key visible), and the valid keys ``[NBLK * BSP]``;
    with ``TMA`` one load each through ``[1, NBLK * BSP, BD]`` block descriptors (:func:`_tma_window`)."""
    offs = tl.arange(0, NBLK * BSP)
    key_ok = offs % BSP < BS
    if TMA:
        row = tl.full([], 0, tl.int32) + b0 * BS
        k = tl.reshape(k_desc.load([i_b, row, (i_h * D).to(tl.int32)]), (NBLK * BSP, BD))
        v = tl.reshape(v_desc.load([i_b, row, (i_h * DV).to(tl.int32)]), (NBLK * BSP, BDV))
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
    else:
        kpos = (b0 + offs // BSP) * BS + offs % BSP
        k, v = _key_block(k_ptr, v_ptr, (i_b * T_K + kpos) * HKV + i_h, key_ok, D, BD, DV, BDV, UPCAST)
    return k, v, key_ok


@triton.jit
def _window_keys(j, n_end, n_init, w_lo, i_b, i_h, T_K, HKV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr,
                 STEP: tl.constexpr):
    """Forced blocks ``j .. j + STEP - 1`` of a window tile (:func:`_window_tile`'s order; those at ``n_end`` or
    beyond masked) as one key tile: ``(kpos, key_ok, kv_rows)`` like :func:`_key_rows`, ``STEP * BSP`` keys.
    ``key_ok`` does not test ``kpos < T_K``: only the queries' own block can reach past the keys, and callers
    that visit it add the test (the full blocks before it skip the work)."""
    offs = tl.arange(0, STEP * BSP)
    jj = j + offs // BSP
    blk = tl.where(jj < n_init, jj, w_lo + jj - n_init)
    kpos = blk * BS + offs % BSP
    return kpos, (offs % BSP < BS) & (jj < n_end), (i_b * T_K + kpos) * HKV + i_h


@triton.jit
def _window_kernel(q_ptr, k_ptr, v_ptr, k_desc, v_desc, k_run_desc, v_run_desc, po_ptr, plse_ptr, qk_scale, T_Q,
                   T_K, INIT, LOCAL, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                   TOKS: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr,
                   BS: tl.constexpr, BSP: tl.constexpr, STEP: tl.constexpr, TMA: tl.constexpr, UPCAST: tl.constexpr,
                   PREC: tl.constexpr, PDL: tl.constexpr):
    """The forced blocks of ``TOKS`` consecutive queries of one block (they share them) for the ``G`` heads of a
    KV group, as one ``[TOKS * GP, D]`` tile against key tiles: the init blocks one by one, the window's blocks
    before the queries' own ``STEP`` per tile (:func:`_block_run`; the odd ones one by one), then the own block
    alone, causal: partial ``o`` (fp32) and log2-sum-exp for :func:`_fwd_kernel`. With ``TMA`` the blocks before
    the own one come through the block descriptors ``k_desc`` / ``v_desc`` (one block) and ``k_run_desc`` /
    ``v_run_desc`` (``STEP`` blocks); the own block, which holds keys after some of the queries, always by
    masked per-thread loads."""
    if PDL:
        pdl_handoff()
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale = as_fp32(qk_scale)
    pos, q_rows, row_ok, n_init, w_lo, n = _window_tile(i_m, i_h, i_b, T_Q, T_K, INIT, LOCAL, HQ, G, GP, TOKS, BS)
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BDV)
    q = _tile(q_ptr, q_rows, row_ok, offs_d, offs_d < D, D, UPCAST)
    m = tl.full([TOKS * GP], float("-inf"), tl.float32)
    den = tl.zeros([TOKS * GP], tl.float32)
    acc = tl.zeros([TOKS * GP, BDV], tl.float32)
    for j in range(0, tl.minimum(n_init, n - 1)):  # blocks before the last (the own one) show all their keys
        k, v, key_ok = _block_run(k_ptr, v_ptr, k_desc, v_desc, i_b, i_h, j, T_K, HKV, D, BD, DV, BDV, BS, BSP, 1,
                                  UPCAST, TMA)
        m, den, acc = _attend(q, k, v, key_ok[None, :], m, den, acc, qk_scale, PREC)
    n_win = tl.maximum(n - 1 - n_init, 0)  # the window's blocks before the own one (none: LOCAL < 0)
    for j in range(0, n_win - STEP + 1, STEP):
        k, v, key_ok = _block_run(k_ptr, v_ptr, k_run_desc, v_run_desc, i_b, i_h, w_lo + j, T_K, HKV, D, BD, DV,
                                  BDV, BS, BSP, STEP, UPCAST, TMA)
        m, den, acc = _attend(q, k, v, key_ok[None, :], m, den, acc, qk_scale, PREC)
    for j in range(n_win - n_win % STEP, n_win):
        k, v, key_ok = _block_run(k_ptr, v_ptr, k_desc, v_desc, i_b, i_h, w_lo + j, T_K, HKV, D, BD, DV, BDV, BS,
                                  BSP, 1, UPCAST, TMA)
        m, den, acc = _attend(q, k, v, key_ok[None, :], m, den, acc, qk_scale, PREC)
    kpos, key_ok, kv_rows = _window_keys(n - 1, n, n_init, w_lo, i_b, i_h, T_K, HKV, BS, BSP, 1)  # own: causal
    key_ok = key_ok & (kpos < T_K)
    k, v = _key_block(k_ptr, v_ptr, kv_rows, key_ok, D, BD, DV, BDV, UPCAST)
    m, den, acc = _attend(q, k, v, key_ok[None, :] & (kpos[None, :] <= pos[:, None]), m, den, acc, qk_scale,
                          PREC)
    tl.store(po_ptr + q_rows.to(tl.int64)[:, None] * DV + offs_v[None, :], acc / den[:, None],
             mask=row_ok[:, None] & (offs_v < DV)[None, :])
    tl.store(plse_ptr + q_rows, m + tl.log2(den), mask=row_ok)


@triton.jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, k_desc, v_desc, idx_ptr, po_ptr, plse_ptr, o_ptr, lse_ptr, acc_ptr, m_ptr,
                l_ptr, qk_scale, T_Q, T_K, SLOTS, INIT, LOCAL, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr,
                GM: tl.constexpr, N_IDX: tl.constexpr, N_IDXP: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
                DV: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr, SPLIT: tl.constexpr,
                FORCING: tl.constexpr, FROM_PART: tl.constexpr, TMA: tl.constexpr, UPCAST: tl.constexpr,
                PREC: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        pdl_handoff()
    i_t, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale = as_fp32(qk_scale)
    g = tl.arange(0, GM)
    row_ok = g < G
    pos = T_K - T_Q + i_t
    offs_d, offs_v, offs_s = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BSP)
    q_rows = (i_b * T_Q + i_t) * HQ + i_h * G + g
    q = _tile(q_ptr, q_rows, row_ok, offs_d, offs_d < D, D, UPCAST)
    if FROM_PART:  # continue from the forced blocks' result (normalized o, log2-sum-exp)
        m = tl.load(plse_ptr + q_rows, mask=row_ok, other=0.0)
        den = tl.full([GM], 1.0, tl.float32)
        acc = tl.load(po_ptr + q_rows.to(tl.int64)[:, None] * DV + offs_v[None, :],
                      mask=row_ok[:, None] & (offs_v < DV)[None, :], other=0.0)
    else:
        m = tl.full([GM], float("-inf"), tl.float32)
        den = tl.zeros([GM], tl.float32)
        acc = tl.zeros([GM, BDV], tl.float32)
    idx_row, bt, n_init, w_lo, lo, n_virtual, n_steps = _slot_plan(
        idx_ptr, i_b, i_h, i_t, pos, T_Q, INIT, LOCAL, HKV, N_IDX, N_IDXP, BS, FORCING, FROM_PART)
    s_lo = i_s * SLOTS
    for s in range(s_lo, tl.minimum(s_lo + SLOTS, n_steps)):
        blk = _slot_block(idx_row, s, n_virtual, lo, bt, n_init, w_lo, INIT, FORCING)
        kpos = blk * BS + offs_s
        key_ok = (blk >= 0) & (offs_s < BS) & (kpos <= pos)
        kv_rows = (i_b * T_K + kpos) * HKV + i_h
        k, v = _gathered_block(k_ptr, v_ptr, k_desc, v_desc, i_b, i_h, blk, bt, kv_rows, key_ok, D, BD, DV, BDV,
                               BS, BSP, UPCAST, TMA)
        m, den, acc = _attend(q, k, v, key_ok[None, :], m, den, acc, qk_scale, PREC)
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
                    DC: tl.constexpr, PDL: tl.constexpr):
    """Merge the ``NSPLIT`` partial softmax results of one (query, KV head), value columns ``DC * program_id(2)``
    on: every split is loaded at once (``[NSP, GM, DC]``), no dependent chain of loads."""
    if PDL:
        pdl_handoff()
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
def _dq_step(q, do, lse, delta, k, v, ok, dq, qk_scale, PREC: tl.constexpr):
    """``dq`` (unscaled) plus one ``[N, D]`` key / value tile's share; ``ok`` marks the visible keys."""
    p = tl.where(ok, tl.exp2(tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PREC)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=PREC)


@triton.jit
def _q_side(q_ptr, o_ptr, do_ptr, lse_ptr, q_rows, row_ok, offs_d, offs_v, D: tl.constexpr, DV: tl.constexpr,
            UPCAST: tl.constexpr):
    """``(q, do, lse, delta = rowsum(o * do))`` of the given query rows."""
    q = _tile(q_ptr, q_rows, row_ok, offs_d, offs_d < D, D, UPCAST)
    do = _tile(do_ptr, q_rows, row_ok, offs_v, offs_v < DV, DV, UPCAST)
    o = _tile(o_ptr, q_rows, row_ok, offs_v, offs_v < DV, DV, UPCAST)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    return q, do, tl.load(lse_ptr + q_rows, mask=row_ok, other=0.0), delta


@triton.jit
def _dq_window_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, pdq_ptr, delta_ptr, qk_scale, T_Q, T_K, INIT,
                      LOCAL, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                      TOKS: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr,
                      BS: tl.constexpr, BSP: tl.constexpr, STEP: tl.constexpr, UPCAST: tl.constexpr,
                      PREC: tl.constexpr):
    """The forced blocks' share of ``dq`` (fp32, unscaled) for a :func:`_window_kernel` tile (``STEP`` blocks
    per key tile), and ``delta``."""
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale = as_fp32(qk_scale)
    pos, q_rows, row_ok, n_init, w_lo, n = _window_tile(i_m, i_h, i_b, T_Q, T_K, INIT, LOCAL, HQ, G, GP, TOKS, BS)
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BDV)
    q, do, lse, delta = _q_side(q_ptr, o_ptr, do_ptr, lse_ptr, q_rows, row_ok, offs_d, offs_v, D, DV, UPCAST)
    tl.store(delta_ptr + q_rows, delta, mask=row_ok)
    dq = tl.zeros([TOKS * GP, BD], tl.float32)
    for j in range(0, n, STEP):
        kpos, key_ok, kv_rows = _window_keys(j, n, n_init, w_lo, i_b, i_h, T_K, HKV, BS, BSP, STEP)
        key_ok = key_ok & (kpos < T_K)
        k, v = _key_block(k_ptr, v_ptr, kv_rows, key_ok, D, BD, DV, BDV, UPCAST)
        dq = _dq_step(q, do, lse, delta, k, v, key_ok[None, :] & (kpos[None, :] <= pos[:, None]), dq, qk_scale,
                      PREC)
    tl.store(pdq_ptr + q_rows.to(tl.int64)[:, None] * D + offs_d[None, :], dq,
             mask=row_ok[:, None] & (offs_d < D)[None, :])


@triton.jit
def _dq_kernel(q_ptr, k_ptr, v_ptr, k_desc, v_desc, o_ptr, do_ptr, lse_ptr, idx_ptr, pdq_ptr, dq_ptr, delta_ptr,
               qk_scale, scale, T_Q, T_K, INIT, LOCAL, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr,
               GM: tl.constexpr, N_IDX: tl.constexpr, N_IDXP: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
               DV: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr, FORCING: tl.constexpr,
               FROM_PART: tl.constexpr, TMA: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale, scale = as_fp32(qk_scale), as_fp32(scale)
    g = tl.arange(0, GM)
    row_ok = g < G
    pos = T_K - T_Q + i_t
    offs_d, offs_v, offs_s = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BSP)
    q_rows = (i_b * T_Q + i_t) * HQ + i_h * G + g
    q, do, lse, delta = _q_side(q_ptr, o_ptr, do_ptr, lse_ptr, q_rows, row_ok, offs_d, offs_v, D, DV, UPCAST)
    if FROM_PART:  # the forced blocks' share, from _dq_window_kernel (which also stored delta)
        dq = tl.load(pdq_ptr + q_rows.to(tl.int64)[:, None] * D + offs_d[None, :],
                     mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    else:
        tl.store(delta_ptr + q_rows, delta, mask=row_ok)
        dq = tl.zeros([GM, BD], tl.float32)
    idx_row, bt, n_init, w_lo, lo, n_virtual, n_steps = _slot_plan(
        idx_ptr, i_b, i_h, i_t, pos, T_Q, INIT, LOCAL, HKV, N_IDX, N_IDXP, BS, FORCING, FROM_PART)
    for slot in range(0, n_steps):
        blk = _slot_block(idx_row, slot, n_virtual, lo, bt, n_init, w_lo, INIT, FORCING)
        kpos = blk * BS + offs_s
        key_ok = (blk >= 0) & (offs_s < BS) & (kpos <= pos)
        kv_rows = (i_b * T_K + kpos) * HKV + i_h
        k, v = _gathered_block(k_ptr, v_ptr, k_desc, v_desc, i_b, i_h, blk, bt, kv_rows, key_ok, D, BD, DV, BDV,
                               BS, BSP, UPCAST, TMA)
        dq = _dq_step(q, do, lse, delta, k, v, key_ok[None, :], dq, qk_scale, PREC)
    tl.store(dq_ptr + q_rows.to(tl.int64)[:, None] * D + offs_d[None, :], (dq * scale).to(dq_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d < D)[None, :])


@triton.jit
def _dkv_step(k, v, q, do, lse, delta, ok, dk, dv, qk_scale, PREC: tl.constexpr):
    """``(dk, dv)`` (dk unscaled) plus one ``[M, D]`` query tile's share for a ``[N, D]`` key / value tile;
    ``ok`` ``[N, M]`` marks the visible (key, query) pairs."""
    pt = tl.where(ok, tl.exp2(tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale - lse[None, :]), 0.0)
    dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PREC)
    dst = pt * (tl.dot(v, tl.trans(do), input_precision=PREC) - delta[None, :])
    return tl.dot(dst.to(q.dtype), q, dk, input_precision=PREC), dv


@triton.jit
def _dkv_queries(q_ptr, do_ptr, lse_ptr, delta_ptr, q_rows, col_ok, qpos, k, v, kpos, key_ok, dk, dv, qk_scale,
                 D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr, UPCAST: tl.constexpr,
                 PREC: tl.constexpr):
    """``(dk, dv)`` plus the share of the query rows ``q_rows`` (valid ``col_ok``, at absolute positions ``qpos``)
    in a key block's gradients, causally masked."""
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BDV)
    q = _tile(q_ptr, q_rows, col_ok, offs_d, offs_d < D, D, UPCAST)
    do = _tile(do_ptr, q_rows, col_ok, offs_v, offs_v < DV, DV, UPCAST)
    lse = tl.load(lse_ptr + q_rows, mask=col_ok, other=0.0)
    delta = tl.load(delta_ptr + q_rows, mask=col_ok, other=0.0)
    ok = key_ok[:, None] & col_ok[None, :] & (kpos[:, None] <= qpos[None, :])
    return _dkv_step(k, v, q, do, lse, delta, ok, dk, dv, qk_scale, PREC)


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
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BDV)
    kpos, key_ok, kv_rows = _key_rows(i_b, i_h, blk, T_K, HKV, BS, BSP)
    k, v = _key_block(k_ptr, v_ptr, kv_rows, key_ok, D, BD, DV, BDV, UPCAST)
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
        dk, dv = _dkv_queries(q_ptr, do_ptr, lse_ptr, delta_ptr, q_rows, col_ok, T_K - T_Q + qi, k, v, kpos, key_ok,
                              dk, dv, qk_scale, D, BD, DV, BDV, UPCAST, PREC)
    dk_ptrs = dk_ptr + kv_rows.to(tl.int64)[:, None] * D + offs_d[None, :]
    dv_ptrs = dv_ptr + kv_rows.to(tl.int64)[:, None] * DV + offs_v[None, :]
    dk_ok = key_ok[:, None] & (offs_d < D)[None, :]
    dv_ok = key_ok[:, None] & (offs_v < DV)[None, :]
    if shared:
        tl.atomic_add(dk_ptrs, dk * scale, mask=dk_ok)
        tl.atomic_add(dv_ptrs, dv, mask=dv_ok)
    else:  # the block's only item; :func:`_dkv_window_kernel` may have stored the local window's share first
        tl.store(dk_ptrs, tl.load(dk_ptrs, mask=dk_ok, other=0.0) + dk * scale, mask=dk_ok)
        tl.store(dv_ptrs, tl.load(dv_ptrs, mask=dv_ok, other=0.0) + dv, mask=dv_ok)


@triton.jit
def _dkv_window_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, qk_scale, scale, T_Q, T_K,
                       INIT, LOCAL, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                       TOKS: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, DV: tl.constexpr, BDV: tl.constexpr,
                       BS: tl.constexpr, BSP: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr):
    """dk, dv of key block ``program_id(0)`` from the queries whose local window holds it (the queries of blocks
    ``kb .. kb + LOCAL``), as ``[TOKS * GP, D]`` query tiles; init blocks are left to the CSR pass. Stores."""
    kb, i_bh = tl.program_id(0), tl.program_id(1)
    if kb < INIT:
        return
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale, scale = as_fp32(qk_scale), as_fp32(scale)
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BDV)
    kpos, key_ok, kv_rows = _key_rows(i_b, i_h, kb, T_K, HKV, BS, BSP)
    k, v = _key_block(k_ptr, v_ptr, kv_rows, key_ok, D, BD, DV, BDV, UPCAST)
    dk = tl.zeros([BSP, BD], tl.float32)
    dv = tl.zeros([BSP, BDV], tl.float32)
    p_lo = tl.maximum(kb * BS, T_K - T_Q)  # absolute positions of those queries
    p_hi = tl.minimum((kb + LOCAL + 1) * BS, T_K)
    r = tl.arange(0, TOKS * GP)
    g = r % GP
    for start in range((p_lo // TOKS) * TOKS, p_hi, TOKS):
        pos = start + r // GP
        col_ok = (pos >= p_lo) & (pos < p_hi) & (g < G)
        q_rows = (i_b * T_Q + pos - (T_K - T_Q)) * HQ + i_h * G + g
        dk, dv = _dkv_queries(q_ptr, do_ptr, lse_ptr, delta_ptr, q_rows, col_ok, pos, k, v, kpos, key_ok, dk, dv,
                              qk_scale, D, BD, DV, BDV, UPCAST, PREC)
    tl.store(dk_ptr + kv_rows.to(tl.int64)[:, None] * D + offs_d[None, :], dk * scale,
             mask=key_ok[:, None] & (offs_d < D)[None, :])
    tl.store(dv_ptr + kv_rows.to(tl.int64)[:, None] * DV + offs_v[None, :], dv,
             mask=key_ok[:, None] & (offs_v < DV)[None, :])


def _geometry(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> dict:
    hq, hkv = q.shape[2], k.shape[2]
    g = hq // hkv
    return dict(HQ=hq, HKV=hkv, G=g, D=q.shape[-1], BD=pow2(q.shape[-1], 16), DV=v.shape[-1],
                BDV=pow2(v.shape[-1], 16), BS=block_size, BSP=pow2(block_size, 16), **dot_args(q.dtype))


#: (num_warps, num_stages) per kernel on CUDA ("_big": query tiles of G * D >= 64 * 128 elements); measured on an
#: H200 at T = 128K, G = 16, D = 128 (docs/benchmarks.md)
LAUNCH = {"window": (8, 3), "gather": (4, 3), "gather_big": (8, 3), "dq_window": (8, 2), "dq_gather": (4, 3),
          "dq_gather_big": (8, 3), "dkv_window": (4, 2), "dkv": (4, 2)}
#: rows of the window kernels' query tiles on CUDA (``TOKS * GP``), by pass
WINDOW_ROWS = {"fwd": 128, "dq": 128, "dkv": 64}
#: rows of the CSR dk / dv kernel's query tiles on CUDA (``BQ * GP``)
DKV_ROWS = 64
#: blocks per key tile of the window kernels, by pass (bench/window_ab.py, H200). Forward: 2 ([128, D] tiles for
#: blocks of 64) against 1 took stage 2's forward from 17.63-17.76 to 17.21-17.37 ms at 32K (within the noise at
#: 128K). dq: no difference (backward at 32K 37.11-37.81 ms with 2, 37.19-37.21 with 1), so 1.
WINDOW_STEP = {"fwd": 2, "dq": 1}
#: fewest slots per program when few (query, KV head) pairs split their slots (decode): 3 against 2 took a
#: 128K decode step's stage 2 from 15.7-16.2 to 15.0 us on an H200 (bench/decode_split_sweep.py)
SPLIT_SLOTS = 3


#: the gather kernels' key / value tiles by TMA where :func:`_tma_gathers` allows it, with bit-identical results
#: (bench/tma_ab.py, 128K prefill: forward gathers 69.2 -> 59.8 ms on an H200, 69.8 -> 67.9 ms on an H100; dq
#: gathers 76.0 -> 68.7 ms on the H100)
TMA_GATHERS = True


#: the forward window kernel's key / value tiles before the queries' own block by TMA where :func:`_tma_window`
#: allows it (same tiles, same order, same results as the per-thread loads)
TMA_WINDOW = True


def _tma_loads(geo: dict, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether key / value tiles can come by TMA: unpadded power-of-two tiles of :func:`tma_ready` keys and
    values."""
    return (geo["D"], geo["DV"], geo["BS"]) == (geo["BD"], geo["BDV"], geo["BSP"]) and tma_ready(k, v)


def _tma_window(geo: dict, k: torch.Tensor, v: torch.Tensor, direct: bool) -> bool:
    """Whether the forward window kernel loads its tiles before the queries' own block by TMA: direct launches
    only (as :func:`_tma_gathers`), where :func:`_tma_loads` allows it."""
    return TMA_WINDOW and direct and _tma_loads(geo, k, v)


def _tma_gathers(geo: dict, k: torch.Tensor, v: torch.Tensor, window: bool, local_blocks: int, direct: bool,
                 t_q: int) -> bool:
    """Whether the gather kernels load their key / value tiles by TMA: for direct launches (traced calls keep
    per-thread loads: compiling a layer with the descriptor-taking kernels failed on an H100, torch 2.11 and
    Triton 3.6), where no gathered block holds a key after its query that the masked loads would have hidden:
    after window tiles that took every forced block, the query's own included (``local_blocks >= 0``: the
    gathered blocks lie entirely before the query), or for a single query, the last position (decode: its own
    block reaches past it only beyond the keys, out of bounds, read as zeros); with unpadded power-of-two tiles of
    contiguous, 16-byte aligned keys and values, on a GPU with TMA (compute capability 9 or more) or the
    interpreter."""
    return TMA_GATHERS and direct and ((window and local_blocks >= 0) or t_q == 1) and _tma_loads(geo, k, v)


def _kv_descriptors(k: torch.Tensor, v: torch.Tensor, geo: dict, tma: bool, blocks: int = 1) -> tuple:
    """``(k_desc, v_desc)``: :func:`row_descriptor` of ``k`` / ``v`` for tiles of ``blocks`` blocks with ``tma``
    (which needs ``D == BD``, ``DV == BDV``), else ``k`` and ``v`` themselves (unused by the kernels)."""
    if not tma:
        return k, v
    return row_descriptor(k, blocks * geo["BSP"]), row_descriptor(v, blocks * geo["BSP"])


def _window_rows(geo: dict, block_size: int, on_cuda: bool, kernel: str) -> int:
    """Queries per tile of a window kernel (``kernel`` a key of :data:`WINDOW_ROWS`): a power of two dividing
    ``block_size``, ``[TOKS * GP, D]`` tiles of about ``WINDOW_ROWS[kernel]`` rows on CUDA (half for head
    dimensions over 128; at least one query, so ``GP`` rows for large groups), 16 on the interpreter; 0 where
    the tile would have under 16 rows."""
    gp = pow2(geo["G"])
    rows = (WINDOW_ROWS[kernel] // (1 if geo["BD"] <= 128 else 2)) if on_cuda else 16
    toks = min(max(rows // gp, 1), block_size & -block_size)
    return toks if toks * gp >= 16 else 0


def _window_step(geo: dict, kernel: str) -> int:
    """Blocks per key tile of a window kernel: :data:`WINDOW_STEP` for head dimensions up to 128 (measured
    there), 1 above (two ``[block, D]`` tiles per pipeline stage would outgrow shared memory)."""
    return WINDOW_STEP[kernel] if max(geo["BD"], geo["BDV"]) <= 128 else 1


def _csr_queries(gp: int, on_cuda: bool) -> int:
    """Queries per step of :func:`_dkv_kernel` (``[BQ * GP, D]`` tiles: :data:`DKV_ROWS` rows on CUDA, one query
    on the interpreter), at least 16 rows."""
    return max(16 // gp, DKV_ROWS // gp if on_cuda else 1)


@triton_op("mixarch::infllm_v2_sparse_fwd_triton", mutates_args=())
def sparse_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, block_size: int,
                  scale: float, init_blocks: int, local_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(o [B, Tq, Hq, Dv], lse [B, Tq, Hq] fp32, log2 domain)``; ``local_blocks = -1``: none. See the module
    doc."""
    return _sparse_fwd(q, k, v, indices, block_size, scale, init_blocks, local_blocks, direct=False)


def _sparse_fwd(q, k, v, indices, block_size, scale, init_blocks, local_blocks, *, direct: bool):
    """The forward's launches (``direct``: see :func:`~mixarch.kernels.triton.infllm_v2.common.launcher`)."""
    b, t_q, hq, _ = q.shape
    t_k, hkv = k.shape[1], k.shape[2]
    n_idx = indices.shape[-1]
    geo = _geometry(q, k, v, block_size)
    gm = pow2(geo["G"], 16)
    o = torch.empty((b, t_q, hq, v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, t_q, hq), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, lse
    forcing = init_blocks > 0 or local_blocks >= 0
    pdl = pdl_enabled(q.device, direct)
    n_slots = n_idx + (init_blocks + local_blocks + 1 if forcing else 0)  # at most, forced blocks included
    nsplit = min(cdiv(2 * num_sms(q.device), t_q * b * hkv), cdiv(n_slots, SPLIT_SLOTS)) if n_slots else 1
    slots = cdiv(max(n_slots, 1), nsplit)
    nsplit = cdiv(max(n_slots, 1), slots)
    split = nsplit > 1
    toks = _window_rows(geo, block_size, q.is_cuda, "fwd")
    window = forcing and not split and toks > 0
    part_shape = (b * hkv * nsplit * t_q, gm) if split else (1, 1)
    m_part = torch.empty(part_shape, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    acc = torch.empty((*part_shape, geo["BDV"]) if split else (1,), dtype=torch.float32, device=q.device)
    po = torch.empty(o.shape if window else (1,), dtype=torch.float32, device=q.device)
    plse = torch.empty(lse.shape if window else (1,), dtype=torch.float32, device=q.device)
    if window:
        step, tma_w = _window_step(geo, "fwd"), _tma_window(geo, k, v, direct)
        launcher(_window_kernel, direct)[(cdiv(t_q + (t_k - t_q) % toks, toks), b * hkv)](
            q, k, v, *_kv_descriptors(k, v, geo, tma_w), *_kv_descriptors(k, v, geo, tma_w, step), po, plse,
            scale * LOG2E, t_q, t_k, init_blocks, local_blocks, GP=pow2(geo["G"]), TOKS=toks, STEP=step,
            TMA=tma_w, **geo, **launch(*LAUNCH["window"], pdl=pdl))
    big = q.is_cuda and gm * geo["BD"] >= 64 * 128
    tma = _tma_gathers(geo, k, v, window, local_blocks, direct, t_q)
    launcher(_fwd_kernel, direct)[(t_q, nsplit, b * hkv)](
        q, k, v, *_kv_descriptors(k, v, geo, tma), indices, po, plse, o, lse, acc, m_part, l_part, scale * LOG2E,
        t_q, t_k, slots, init_blocks, local_blocks, GM=gm, N_IDX=n_idx, N_IDXP=pow2(n_idx), SPLIT=split,
        FORCING=forcing, FROM_PART=window, TMA=tma, **geo, **launch(*LAUNCH["gather_big" if big else "gather"],
                                                                   pdl=pdl))
    if split:
        nsp = pow2(nsplit)
        dc = max(1, min(geo["BDV"], 8192 // (nsp * gm)))
        launcher(_combine_kernel, direct)[(t_q, b * hkv, geo["BDV"] // dc)](
            acc, m_part, l_part, o, lse, t_q, nsplit, HQ=hq, HKV=hkv, G=geo["G"], GM=gm, DV=geo["DV"],
            BDV=geo["BDV"], NSP=nsp, DC=dc, **launch(4, pdl=pdl))
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
    nb = cdiv(t_k, block_size)
    n_blk = b * hkv * nb
    dev = indices.device
    query = torch.arange(t_q, device=dev)
    pos = query + (t_k - t_q)
    valid = (indices >= 0) & (indices * block_size <= pos[:, None])
    bh = torch.arange(b * hkv, device=dev).view(b, hkv, 1, 1)
    key = torch.where(valid, (bh * nb + indices) * t_q + query[:, None], n_blk * t_q)
    key = torch.sort(key.flatten()).values
    csr_q = (key % t_q).to(torch.int32)
    # the keys are sorted by block: each block's queries start where its first key would be inserted
    blk_off = torch.searchsorted(key // t_q, torch.arange(n_blk + 1, device=dev))
    counts = blk_off.diff()
    zero = counts.new_zeros(1)
    item_off = torch.cat([zero, torch.cumsum((counts + chunk - 1) // chunk, 0)])
    max_items = n_blk + cdiv(key.numel(), chunk)
    item_blk = torch.searchsorted(item_off, torch.arange(max_items, device=dev), right=True) - 1
    return csr_q, blk_off, item_off, item_blk


@triton_op("mixarch::infllm_v2_sparse_bwd_triton", mutates_args=())
def sparse_bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, o: torch.Tensor,
                  lse: torch.Tensor, do: torch.Tensor, block_size: int, scale: float, init_blocks: int,
                  local_blocks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of :func:`sparse_fwd_op`; see the module doc."""
    return _sparse_bwd(q, k, v, indices, o, lse, do, block_size, scale, init_blocks, local_blocks, direct=False)


def _sparse_bwd(q, k, v, indices, o, lse, do, block_size, scale, init_blocks, local_blocks, *, direct: bool):
    """The backward's launches (``direct``: see :func:`~mixarch.kernels.triton.launcher`)."""
    b, t_q, hq, _ = q.shape
    t_k, hkv = k.shape[1], k.shape[2]
    forcing = init_blocks > 0 or local_blocks >= 0
    n_idx = indices.shape[-1]
    geo = _geometry(q, k, v, block_size)
    gm, gp = pow2(geo["G"], 16), pow2(geo["G"])
    dq = torch.empty_like(q)
    delta = torch.empty((b, t_q, hq), dtype=torch.float32, device=q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
    if q.numel() == 0 or (n_idx == 0 and not forcing):
        return dq.zero_(), dk.to(k.dtype), dv.to(v.dtype)
    toks = _window_rows(geo, block_size, q.is_cuda, "dq")
    window = forcing and toks > 0
    pdq = torch.empty(q.shape if window else (1,), dtype=torch.float32, device=q.device)
    if window:
        launcher(_dq_window_kernel, direct)[(cdiv(t_q + (t_k - t_q) % toks, toks), b * hkv)](
            q, k, v, o, do, lse, pdq, delta, scale * LOG2E, t_q, t_k, init_blocks, local_blocks, GP=gp, TOKS=toks,
            STEP=_window_step(geo, "dq"), **geo, **launch(*LAUNCH["dq_window"]))
    big = q.is_cuda and gm * geo["BD"] >= 64 * 128
    tma = _tma_gathers(geo, k, v, window, local_blocks, direct, t_q)
    launcher(_dq_kernel, direct)[(t_q, b * hkv)](
        q, k, v, *_kv_descriptors(k, v, geo, tma), o, do, lse, indices, pdq, dq, delta, scale * LOG2E, scale, t_q,
        t_k, init_blocks, local_blocks, GM=gm, N_IDX=n_idx, N_IDXP=pow2(n_idx), FORCING=forcing,
        FROM_PART=window, TMA=tma, **geo, **launch(*LAUNCH["dq_gather_big" if big else "dq_gather"]))
    local = local_blocks if local_blocks >= 0 else None
    pairs = with_forced_blocks(indices, t_k, block_size=block_size, init_blocks=init_blocks, local_blocks=local)
    toks = _window_rows(geo, block_size, q.is_cuda, "dkv")
    if forcing and local is not None and toks > 0:  # the local windows' dk, dv as dense tiles; CSR adds the rest
        launcher(_dkv_window_kernel, direct)[(cdiv(t_k, block_size), b * hkv)](
            q, k, v, do, lse, delta, dk, dv, scale * LOG2E, scale, t_q, t_k, init_blocks, local_blocks, GP=gp,
            TOKS=toks, **geo, **launch(*LAUNCH["dkv_window"]))
        n_forced = pairs.shape[-1] - n_idx
        init = forced_blocks(t_q, t_k, block_size=block_size, init_blocks=init_blocks, local_blocks=None,
                             device=q.device).to(indices.dtype)
        pairs = torch.cat([init.expand(b, hkv, t_q, init.shape[-1]), pairs[..., n_forced:]], dim=-1)
    chunk = 256 if q.is_cuda else 3  # small on CPU so that tests reach the shared-block (atomic) path
    bq = _csr_queries(gp, q.is_cuda)
    csr_q, blk_off, item_off, item_blk = _block_csr(pairs, t_k, block_size, chunk)
    launcher(_dkv_kernel, direct)[(item_blk.numel(),)](
        q, k, v, do, lse, delta, csr_q, blk_off, item_off, item_blk, dk, dv, scale * LOG2E, scale, t_q, t_k,
        cdiv(t_k, block_size), blk_off.numel() - 1, chunk, GP=gp, BQ=bq, **geo, **launch(*LAUNCH["dkv"]))
    return dq, dk.to(k.dtype), dv.to(v.dtype)


def _setup_context(ctx, inputs, output):
    q, k, v, indices, block_size, scale, init_blocks, local_blocks = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, indices, o, lse)
    ctx.geometry = (block_size, scale, init_blocks, local_blocks)


def _grads(ctx, do, backward):
    q, k, v, indices, o, lse = ctx.saved_tensors
    dq, dk, dv = backward(q, k, v, indices, o, lse, do.contiguous(), *ctx.geometry)
    return dq, dk, dv, None, None, None, None, None


def _backward(ctx, do, _dlse):
    return _grads(ctx, do, sparse_bwd_op)


sparse_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerSparse(torch.autograd.Function):
    """:func:`sparse_fwd_op` and its backward for eager calls: the same kernels, launched directly (``forward``
    takes ``ctx``: a separate ``setup_context`` costs an ``inspect.signature`` per call)."""

    @staticmethod
    def forward(ctx, q, k, v, indices, block_size, scale, init_blocks, local_blocks):
        args = (q, k, v, indices, block_size, scale, init_blocks, local_blocks)
        output = _sparse_fwd(*args, direct=True)
        _setup_context(ctx, args, output)
        ctx.mark_non_differentiable(output[1])
        return output

    @staticmethod
    def backward(ctx, do, _dlse):
        return _grads(ctx, do, lambda *args: _sparse_bwd(*args, direct=True))


def triton_sparse_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, *,
                                  block_size: int, scale: float | None = None, init_blocks: int = 0,
                                  local_blocks: int | None = None) -> torch.Tensor:
    """Triton ``infllm_v2_sparse_attention``: ``[B, Tq, Hq, Dv]`` in ``q``'s dtype, differentiable in q, k, v.

    Same arguments as :func:`mixarch.ops.infllm_v2.attention.sparse_block_attention`; the block indices of a
    query must be distinct. Needs :func:`supports_sparse`.
    """
    check_forcing(init_blocks, local_blocks)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    args = (q.contiguous(), k.contiguous(), v.contiguous(), indices.contiguous(), block_size, float(scale),
            init_blocks, -1 if local_blocks is None else local_blocks)
    if not eager(*args[:4]):
        return sparse_fwd_op(*args)[0]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _EagerSparse.apply(*args)[0]
    return _sparse_fwd(*args, direct=True)[0]
