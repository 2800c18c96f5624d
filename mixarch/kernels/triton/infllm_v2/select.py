"""InfLLM-V2 stage 1 in Triton: compressed-key scores, block max-pool, init/local forcing and top-k.

Same result as :func:`mixarch.ops.infllm_v2.attention.reference_infllm_v2_select` (semantics: the module doc of
:mod:`mixarch.ops.infllm_v2.select`), up to fp32 rounding of the scores (near-ties). Three launches:

1. ``_lse_kernel``: per (query, head) the log-sum-exp of the visible normalizer keys (C1 for the exact
   normalizer, C2 for the released approximation), online over key tiles; the keys may be split over
   ``NSPLIT`` programs (decode), each writing a partial (max, sum) pair.
2. ``_score_kernel``: one program per (tile of ``BQ`` queries, key range, KV head) loads the tile's ``BQ * G``
   query rows as one ``[BQ*G, D]`` tile, combines the partial normalizers (rows that see no C2 key yet take
   the exact C1 one), and for each tile of ``BN`` C1 keys computes the probabilities, sums them over the
   group's heads and max-pools them into blocks in registers: block ``b`` pools keys
   ``[b*r - (m-1), b*r + r - 1]``, i.e. its own ``r`` keys plus the last ``m - 1`` keys of block ``b - 1``
   (carried across key tiles). Only the block scores ``[B*Hkv, Tq, nb]`` (fp32, candidates ``b <= b_t``)
   reach memory, never the per-key scores. With the keys split over programs (decode) the first key tile's
   logits are computed before the wait for launch 1 (:data:`EARLY_SCORES`).
3. ``_topk_kernel``: one program per ``BR`` rows of block scores applies the forcing (``+inf``), maps the
   scores to order-preserving int32 keys (non-candidates below everything, NaN above ``+inf`` as in
   ``torch.sort``), finds the ``k``-th largest key by a bisection over the int32 range (at most 32 probes; a
   row stops at a probe with exactly ``k`` keys at or above it), keeps everything above it plus the ties of
   largest block index, and compacts the kept blocks with a prefix sum: ascending indices, ``-1`` padded.
   One launch per range of rows whose candidates fit the same power-of-two tile (:func:`_row_ranges`).
   Decode rows (one query, :data:`DECODE_HIST`): the score kernel also counts the unforced candidates per bucket
   of the keys' top bits (atomic adds into counts that the normalizer kernel zeroes), and the bisection starts
   from the bucket holding the k-th largest key.

Tile sizes and launch options of the first two kernels on CUDA: :data:`STAGE1`.

Work (prefill, ``T`` queries and keys, ``Hq`` heads): ``2 * T * Hq * D * T/(2s)`` FLOPs for the C1 pass plus
a quarter (approximate) or the same again (exact normalizer) for the normalizer pass; memory traffic is
dominated by the block-score write and read, ``2 * 4 * Hkv * T * T/(2B)`` bytes.
"""

from __future__ import annotations

import math

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
from mixarch.ops.infllm_v2.compress import C2_FACTOR

#: decode rows (``Tq = 1``): the score kernel also counts each row's free candidate blocks per bucket of the top
#: ``HIST_BITS`` bits of their keys, and the top-k bisection starts from the bucket that holds the k-th largest
#: instead of the whole int32 range (False: the plain bisection). Direct launches only: torch's mutation analysis
#: of a traced kernel cannot follow the counts' atomic adds and would count every pointer as written
DECODE_HIST = True
HIST_BITS = 11
#: the buckets: key >> BUCKET_SHIFT, offset by BUCKET_ZERO to count from 0 (kernel constants)
N_BUCKETS: tl.constexpr = tl.constexpr(1 << HIST_BITS)
BUCKET_SHIFT: tl.constexpr = tl.constexpr(32 - HIST_BITS)
BUCKET_ZERO: tl.constexpr = tl.constexpr(1 << (HIST_BITS - 1))
BUCKET_WIDTH: tl.constexpr = tl.constexpr(1 << (32 - HIST_BITS))
#: the bucket of +inf's key: the forced blocks' (NaN's keys are above it)
INF_BUCKET: tl.constexpr = tl.constexpr((0x7F800000 >> (32 - HIST_BITS)) + (1 << (HIST_BITS - 1)))


@triton.jit
def _order_key(x):
    """Order-preserving int32 keys of fp32 scores (NaN above ``+inf``, as ``torch.sort``); every key > -2^31."""
    bits = tl.where(x != x, 0x7FC00000, x.to(tl.int32, bitcast=True))
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


@triton.jit
def _n_visible(pos, WIN: tl.constexpr, STRIDE: tl.constexpr, N):
    """Compressed keys entirely at or before ``pos``: ``(pos + 1 - WIN) // STRIDE + 1``, at most ``N``."""
    n = tl.where(pos + 1 >= WIN, (tl.maximum(pos + 1 - WIN, 0)) // STRIDE + 1, 0)
    return tl.minimum(n, N)


@triton.jit
def _load_rows(ptr, rows, row_ok, D: tl.constexpr, BD: tl.constexpr, UPCAST: tl.constexpr):
    """``[len(rows), BD]`` tile of a row-major ``[*, D]`` tensor (zeros outside)."""
    offs_d = tl.arange(0, BD)
    x = tl.load(ptr + rows.to(tl.int64)[:, None] * D + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _key_tile(c_ptr, c_desc, i_b, i_h, t, N_C, HKV: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
              BN: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr):
    """Compressed keys ``t * BN ..`` of KV head ``i_h`` as a ``[BN, BD]`` tile, zeros past ``N_C``; with ``TMA``
    one load through the ``[1, BN, D]`` block descriptor of the keys viewed as ``[B, N_C, Hkv * D]`` (rows past
    ``N_C`` are out of bounds: zeros, as the masked loads give)."""
    if TMA:
        c = tl.reshape(c_desc.load([i_b, tl.full([], 0, tl.int32) + t * BN, (i_h * D).to(tl.int32)]), (BN, BD))
        if UPCAST:
            c = c.to(tl.float32)
        return c
    else:
        j = t * BN + tl.arange(0, BN)
        return _load_rows(c_ptr, (i_b * N_C + j) * HKV + i_h, j < N_C, D, BD, UPCAST)


@triton.jit
def _tile_logits(q, c_ptr, c_desc, i_b, i_h, t, N_C, qk_scale, HKV: tl.constexpr, D: tl.constexpr,
                 BD: tl.constexpr, BN: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr, PREC: tl.constexpr):
    """``q . c * qk_scale`` ``[rows, BN]`` for C1 key tile ``t``."""
    c = _key_tile(c_ptr, c_desc, i_b, i_h, t, N_C, HKV, D, BD, BN, UPCAST, TMA)
    return tl.dot(q, tl.trans(c), input_precision=PREC) * qk_scale


@triton.jit
def _lse_kernel(q_ptr, c_ptr, c_desc, m_ptr, l_ptr, hist_ptr, qk_scale, T_Q, T_K, N_C, SPLIT_TILES,
                HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BQ: tl.constexpr,
                D: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, WIN: tl.constexpr, STRIDE: tl.constexpr,
                NSPLIT: tl.constexpr, TMA: tl.constexpr, HIST: tl.constexpr, UPCAST: tl.constexpr,
                PREC: tl.constexpr, PDL: tl.constexpr):
    """Partial (max, sum of exp2) of ``q . c * qk_scale`` over the visible keys of split ``program_id(1)``; with
    ``HIST`` (one query) split 0 also zeroes its row's bucket counts for :func:`_score_kernel`."""
    if PDL:
        pdl_handoff()
    i_q, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if HIST:
        if i_s == 0:
            tl.store(hist_ptr + i_bh * N_BUCKETS + tl.arange(0, N_BUCKETS), 0)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale = as_fp32(qk_scale)
    rows = tl.arange(0, BQ * GP)
    qi = i_q * BQ + rows // GP
    g = rows % GP
    row_ok = (qi < T_Q) & (g < G)
    pos = T_K - T_Q + qi
    nvis = _n_visible(pos, WIN, STRIDE, N_C)
    q = _load_rows(q_ptr, (i_b * T_Q + qi) * HQ + i_h * G + g, row_ok, D, BD, UPCAST)
    n_hi = _n_visible(T_K - T_Q + tl.minimum(i_q * BQ + BQ, T_Q) - 1, WIN, STRIDE, N_C)
    t_lo = i_s * SPLIT_TILES
    t_hi = tl.minimum(t_lo + SPLIT_TILES, tl.cdiv(n_hi, BN))
    m = tl.full([BQ * GP], float("-inf"), tl.float32)
    acc = tl.zeros([BQ * GP], tl.float32)
    for t in range(t_lo, t_hi):
        j = t * BN + tl.arange(0, BN)
        c = _key_tile(c_ptr, c_desc, i_b, i_h, t, N_C, HKV, D, BD, BN, UPCAST, TMA)
        s = tl.dot(q, tl.trans(c), input_precision=PREC) * qk_scale
        s = tl.where(j[None, :] < nvis[:, None], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp2(m - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
        m = m_new
    out = (i_bh * NSPLIT + i_s).to(tl.int64) * T_Q * GP + qi * GP + g
    tl.store(m_ptr + out, m, mask=qi < T_Q)
    tl.store(l_ptr + out, acc, mask=qi < T_Q)


@triton.jit
def _score_kernel(q_ptr, c_ptr, c_desc, m_ptr, l_ptr, out_ptr, hist_ptr, qk_scale, T_Q, T_K, N_C, N_NORM, NB,
                  SPLIT_TILES, INIT, LOCAL, HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr,
                  GP: tl.constexpr, BQ: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
                  WIN: tl.constexpr, STRIDE: tl.constexpr,
                  R: tl.constexpr, TAIL: tl.constexpr, BLOCK: tl.constexpr, NSPLIT_L: tl.constexpr,
                  APPROX: tl.constexpr, WIN2: tl.constexpr, STRIDE2: tl.constexpr, TMA: tl.constexpr,
                  HIST: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr, PDL: tl.constexpr,
                  EARLY: tl.constexpr):
    """Block scores (group-summed, max-pooled, not forced) of the candidate blocks of split ``program_id(1)``;
    with ``HIST`` (one query) also the count of the row's unforced candidates per bucket of key bits. ``EARLY``:
    the first key tile's logits are computed before the PDL wait (they need only ``q`` and the keys, written two
    or more launches back), overlapping their load with the normalizer kernel."""
    if PDL and not EARLY:
        pdl_handoff()
    i_q, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // HKV, i_bh % HKV
    qk_scale = as_fp32(qk_scale)
    rows = tl.arange(0, BQ * GP)
    qi = i_q * BQ + rows // GP
    g = rows % GP
    row_ok = (qi < T_Q) & (g < G)
    pos = T_K - T_Q + qi
    nvis = _n_visible(pos, WIN, STRIDE, N_C)
    q = _load_rows(q_ptr, (i_b * T_Q + qi) * HQ + i_h * G + g, row_ok, D, BD, UPCAST)
    pos_last = T_K - T_Q + tl.minimum(i_q * BQ + BQ, T_Q) - 1
    # C1 key tiles of this split; the tile before the first one only provides the carried pooling tail
    t_lo = i_s * SPLIT_TILES
    t_hi = tl.minimum(t_lo + SPLIT_TILES, tl.cdiv((pos_last // BLOCK + 1) * R, BN))
    t_first = tl.maximum(t_lo - 1, 0)
    if EARLY:
        s_first = _tile_logits(q, c_ptr, c_desc, i_b, i_h, t_first, N_C, qk_scale, HKV, D, BD, BN, UPCAST, TMA,
                               PREC)
        if PDL:
            pdl_handoff()

    # the normalizer: combine the partial (max, sum) pairs of _lse_kernel
    splits = tl.arange(0, NSPLIT_L)
    part = (i_bh * NSPLIT_L + splits[None, :]).to(tl.int64) * T_Q * GP + (qi * GP + g)[:, None]
    pm = tl.load(m_ptr + part, mask=(qi < T_Q)[:, None], other=float("-inf"))
    pl = tl.load(l_ptr + part, mask=(qi < T_Q)[:, None], other=0.0)
    mx = tl.max(pm, 1)
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    lse = mx + tl.log2(tl.sum(pl * tl.exp2(pm - mx[:, None]), 1))
    if APPROX:  # rows that see no C2 key yet fall back to the exact C1 normalizer (few keys: t < 4l - 1)
        no_c2 = _n_visible(pos, WIN2, STRIDE2, N_NORM) == 0
        n_fb = tl.where(T_K - T_Q + i_q * BQ < WIN2 - 1,
                        _n_visible(tl.minimum(pos_last, WIN2 - 2), WIN, STRIDE, N_C), 0)
        m1 = tl.full([BQ * GP], float("-inf"), tl.float32)
        l1 = tl.zeros([BQ * GP], tl.float32)
        for t in range(0, tl.cdiv(n_fb, BN)):
            j = t * BN + tl.arange(0, BN)
            c = _key_tile(c_ptr, c_desc, i_b, i_h, t, N_C, HKV, D, BD, BN, UPCAST, TMA)
            s = tl.dot(q, tl.trans(c), input_precision=PREC) * qk_scale
            s = tl.where(j[None, :] < nvis[:, None], s, float("-inf"))
            m_new = tl.maximum(m1, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l1 = l1 * tl.exp2(m1 - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
            m1 = m_new
        lse = tl.where(no_c2, tl.where(m1 == float("-inf"), 0.0, m1) + tl.log2(l1), lse)

    NBT: tl.constexpr = BN // R
    qq = i_q * BQ + tl.arange(0, BQ)
    qpos = T_K - T_Q + qq
    q_nvis = _n_visible(qpos, WIN, STRIDE, N_C)
    q_bt = qpos // BLOCK
    bidx = tl.arange(0, NBT)
    prev_idx = tl.broadcast_to(tl.maximum(bidx - 1, 0)[None, :], (BQ, NBT))
    u = tl.arange(0, R)[None, None, :]
    carry = tl.full([BQ], float("-inf"), tl.float32)
    for t in range(t_first, t_hi):
        j = t * BN + tl.arange(0, BN)
        if EARLY:
            if t == t_first:
                s = s_first
            else:
                s = _tile_logits(q, c_ptr, c_desc, i_b, i_h, t, N_C, qk_scale, HKV, D, BD, BN, UPCAST, TMA, PREC)
        else:
            s = _tile_logits(q, c_ptr, c_desc, i_b, i_h, t, N_C, qk_scale, HKV, D, BD, BN, UPCAST, TMA, PREC)
        p = tl.where(row_ok[:, None] & (j[None, :] < nvis[:, None]), tl.exp2(s - lse[:, None]), 0.0)
        score = tl.sum(tl.reshape(p, (BQ, GP, BN)), 1)
        score = tl.where(j[None, :] < q_nvis[:, None], score, float("-inf"))
        per_block = tl.reshape(score, (BQ, NBT, R))
        own = tl.max(per_block, 2)
        if TAIL > 0:
            tail = tl.max(tl.where(u >= R - TAIL, per_block, float("-inf")), 2)
        else:
            tail = tl.full([BQ, NBT], float("-inf"), tl.float32)
        prev = tl.where(bidx[None, :] == 0, carry[:, None], tl.gather(tail, prev_idx, 1))
        carry = tl.max(tl.where(bidx[None, :] == NBT - 1, tail, float("-inf")), 1)
        blk = t * NBT + bidx
        dst = (i_bh * T_Q + qq).to(tl.int64)[:, None] * NB + blk[None, :]
        keep = (qq < T_Q)[:, None] & (blk[None, :] <= q_bt[:, None]) & (t >= t_lo)
        block_score = tl.maximum(own, prev)
        tl.store(out_ptr + dst, block_score, mask=keep)
        if HIST:
            forced = (blk[None, :] < INIT) | (blk[None, :] >= q_bt[:, None] - LOCAL)
            bucket = (_order_key(block_score) >> BUCKET_SHIFT) + BUCKET_ZERO
            tl.atomic_add(hist_ptr + i_bh * N_BUCKETS + bucket, tl.full(bucket.shape, 1, tl.int32),
                          mask=keep & ~forced, sem="relaxed")


@triton.jit
def _topk_kernel(s_ptr, hist_ptr, out_ptr, T_Q, T_K, NB, INIT, LOCAL, ROW0, ROW_END, BLOCK: tl.constexpr,
                 TOPK: tl.constexpr, TOPKP: tl.constexpr, BR: tl.constexpr, NBP: tl.constexpr, HIST: tl.constexpr,
                 PDL: tl.constexpr):
    """Forcing + top-``TOPK`` of ``BR`` rows of block scores (of the rows ``[ROW0, ROW_END)``, which have at most
    ``NBP`` candidates); ascending indices, ``-1`` padded. ``HIST`` (one query per row): the rows' bucket counts
    of unforced candidates narrow the search to one bucket."""
    if PDL:
        pdl_handoff()
    i_r, i_bh = tl.program_id(0), tl.program_id(1)
    rows = ROW0 + i_r * BR + tl.arange(0, BR)
    row_ok = rows < ROW_END
    bt = (T_K - T_Q + rows) // BLOCK
    blk = tl.arange(0, NBP)
    cand = row_ok[:, None] & (blk[None, :] <= bt[:, None])
    base = (i_bh * T_Q + rows).to(tl.int64)
    x = tl.load(s_ptr + base[:, None] * NB + blk[None, :], mask=cand, other=float("-inf"))
    forced = (blk[None, :] < INIT) | ((blk[None, :] >= bt[:, None] - LOCAL) & (blk[None, :] <= bt[:, None]))
    x = tl.where(forced, float("inf"), x)
    k_eff = tl.minimum(bt + 1, TOPK)
    key = tl.where(cand, _order_key(x), -2147483648)  # non-candidates below every candidate
    # bisection for the k_eff-th largest key; invariant: at least k_eff keys >= lo, the k_eff-th <= hi. A probe
    # with exactly k_eff keys at or above it is the threshold (those keys are the top k_eff): its row stops there
    lo = tl.full([BR], -2147483647, tl.int64)
    hi = tl.full([BR], 2147483647, tl.int64)
    if HIST:
        # the bucket holding the k_free-th largest unforced key: the last bucket whose count of keys in it and
        # above reaches k_free. The forced keys (+inf) are at or above it unless it is one of NaN's buckets
        # (above +inf), where the bounds would not hold: such rows search the whole range
        k_free = k_eff - tl.sum((forced & cand).to(tl.int32), 1)
        buckets = tl.arange(0, N_BUCKETS)
        counts = tl.load(hist_ptr + (i_bh * T_Q + rows).to(tl.int64)[:, None] * N_BUCKETS + buckets[None, :],
                         mask=row_ok[:, None], other=0)
        at_or_above = tl.sum(counts, 1)[:, None] - tl.cumsum(counts, 1) + counts
        found = tl.sum((at_or_above >= k_free[:, None]).to(tl.int32), 1) - 1
        start = (found - BUCKET_ZERO).to(tl.int64) << BUCKET_SHIFT
        narrow = (k_free > 0) & (found >= 0) & (found <= INF_BUCKET)
        lo = tl.where(narrow, tl.maximum(start, -2147483647), lo)
        hi = tl.where(narrow, start + (BUCKET_WIDTH - 1), hi)
    n_open = BR
    while n_open > 0:
        mid = lo + (hi - lo + 1) // 2
        cnt = tl.sum((key >= mid.to(tl.int32)[:, None]).to(tl.int32), 1)
        lo = tl.where(cnt >= k_eff, mid, lo)
        hi = tl.where(cnt == k_eff, mid, tl.where(cnt >= k_eff, hi, mid - 1))
        n_open = tl.sum((lo < hi).to(tl.int32), 0)
    kth = lo.to(tl.int32)
    above = key > kth[:, None]
    tie = (key == kth[:, None]).to(tl.int32)
    need = k_eff - tl.sum(above.to(tl.int32), 1)
    rank_from_right = tl.sum(tie, 1)[:, None] - tl.cumsum(tie, 1) + tie  # ties: the larger block index wins
    sel = above | ((tie > 0) & (rank_from_right <= need[:, None]))
    dst = tl.cumsum(sel.to(tl.int32), 1) - 1
    tl.store(out_ptr + base[:, None] * TOPK + dst, blk[None, :].to(tl.int64), mask=sel & row_ok[:, None])
    cols = tl.arange(0, TOPKP)
    pad = row_ok[:, None] & (cols[None, :] >= k_eff[:, None]) & (cols[None, :] < TOPK)
    tl.store(out_ptr + base[:, None] * TOPK + cols[None, :], tl.full([BR, TOPKP], -1, tl.int64), mask=pad)


#: stage-1 launches on CUDA (the normalizer and score kernels): query rows (queries x group heads) per tile;
#: compressed keys per tile, when each query tile is one program ("keys", prefill) and when the keys are split over
#: programs ("keys_split": decode, short chunks); warps (None: 8 for tiles of 128 rows or more, else 4); pipeline
#: stages. Measured by bench/select_sweep.py on an H200 at 128K: 128 keys per tile took the prefill selection
#: from 24.8 to 23.7 ms and cost a decode step's selection 0.6-0.8 us (hence 64 there); other rows, warps and
#: stages were slower.
STAGE1 = {"rows": 128, "keys": 128, "keys_split": 64, "warps": None, "stages": 2}


def _query_tile(t_q: int, gp: int, rows: int) -> int:
    """Queries per program: ``rows // gp`` (at least 16 rows for tl.dot), at most what ``t_q`` needs."""
    return max(16 // gp, min(max(rows // gp, 1), pow2(t_q)))


def _nonempty(c: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A tensor with at least one compressed key to point at (all loads of an empty one are masked)."""
    if c is None or c.shape[1] == 0:
        return like.new_zeros((like.shape[0], 1, *like.shape[2:]))
    return c.contiguous()


@triton_op("mixarch::infllm_v2_select_triton", mutates_args=())
def infllm_v2_select_op(q: torch.Tensor, compressed_k: torch.Tensor, compressed_k2: torch.Tensor | None, t_k: int,
                        block_size: int, kernel_size: int, kernel_stride: int, init_blocks: int,
                        local_blocks: int, topk: int, scale: float, exact_normalizer: bool) -> torch.Tensor:
    """Custom-op form of :func:`triton_infllm_v2_select` (positional arguments)."""
    return _select(q, compressed_k, compressed_k2, t_k, block_size, kernel_size, kernel_stride, init_blocks,
                   local_blocks, topk, scale, exact_normalizer, direct=False)


def _select(q, compressed_k, compressed_k2, t_k, block_size, kernel_size, kernel_stride, init_blocks, local_blocks,
            topk, scale, exact_normalizer, *, direct: bool) -> torch.Tensor:
    """The selection's launches (``direct``: see :func:`~mixarch.kernels.triton.launcher`)."""
    b, t_q = q.shape[:2]
    out = torch.empty((b, compressed_k.shape[2], t_q, topk), dtype=torch.int64, device=q.device)
    if t_q == 0 or b == 0:
        return out
    hkv = compressed_k.shape[2]
    hist = torch.empty((b * hkv, N_BUCKETS.value), dtype=torch.int32, device=q.device) \
        if DECODE_HIST and t_q == 1 and direct else None  # direct launches only: see DECODE_HIST
    scores = block_scores(q, compressed_k, compressed_k2, t_k, block_size, kernel_size, kernel_stride, scale,
                          exact_normalizer, direct=direct, hist=hist, forcing=(init_blocks, local_blocks))
    return topk_blocks(scores, out, t_k, block_size, init_blocks, local_blocks, direct=direct, hist=hist)


def block_scores(q, compressed_k, compressed_k2, t_k, block_size, kernel_size, kernel_stride, scale,
                 exact_normalizer, *, direct: bool, hist: torch.Tensor | None = None,
                 forcing: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Launches 1 and 2 of the module doc: the unforced block scores ``[B*Hkv, Tq, nb]`` (fp32; only the
    candidates ``b <= b_t`` written) of ``q`` ``[B, Tq, Hq, D]`` (``Tq >= 1``), the last ``Tq`` of ``t_k``
    positions. ``hist`` (``Tq = 1`` only): int32 ``[B*Hkv, 2^HIST_BITS]``, filled with each row's count of
    candidates not forced by ``forcing`` (init, local blocks) per bucket of key bits (:data:`DECODE_HIST`)."""
    b, t_q, hq, d = q.shape
    if hist is not None and t_q != 1:
        raise ValueError(f"block_scores: hist is for one query per row, got Tq = {t_q}")
    n1, hkv = compressed_k.shape[1], compressed_k.shape[2]
    g = hq // hkv
    gp = pow2(g)
    nb = math.ceil(t_k / block_size)
    approx = not exact_normalizer
    n2 = 0 if compressed_k2 is None else compressed_k2.shape[1]
    q = q.contiguous()
    c1 = _nonempty(compressed_k, compressed_k)
    c2 = _nonempty(compressed_k2, compressed_k) if approx else c1
    r, tail = block_size // kernel_stride, kernel_size // kernel_stride - 1
    qk_scale = scale * LOG2E
    dev = q.device
    cuda = dev.type == "cuda"
    pdl = pdl_enabled(dev, direct)
    bq = _query_tile(t_q, gp, STAGE1["rows"] if cuda else 16)
    bd = pow2(d, 16)
    n_q = cdiv(t_q, bq)
    few = n_q * b * hkv < 2 * num_sms(dev)  # too few query tiles to fill the GPU: keys split over programs
    keys = STAGE1["keys_split" if few or bd > 128 else "keys"]  # (measured at D = 128; smaller tiles above)
    bn = max(keys if cuda else 16, 2 * r)
    common = dict(HQ=hq, HKV=hkv, G=g, GP=gp, BQ=bq, D=d, BD=bd, BN=bn, **dot_args(q.dtype))
    warps = STAGE1["warps"] or (8 if bq * gp >= 128 else 4)
    stages = STAGE1["stages"]

    # 1. normalizer partials, keys split so that at least ~2 programs run per multiprocessor
    win_n, stride_n, n_norm = (C2_FACTOR * kernel_size, C2_FACTOR * kernel_stride, n2) if approx else \
        (kernel_size, kernel_stride, n1)
    norm_tiles = max(cdiv(n_norm, bn), 1)
    nsplit_l = min(pow2(cdiv(2 * num_sms(dev), n_q * b * hkv)), pow2(norm_tiles), 64)
    m_part = torch.empty((b * hkv, nsplit_l, t_q, gp), dtype=torch.float32, device=dev)
    l_part = torch.empty_like(m_part)
    c_norm = c2 if approx else c1
    tma = _tma_keys(c_norm, d, bd, direct) and _tma_keys(c1, d, bd, direct)
    launcher(_lse_kernel, direct)[(n_q, nsplit_l, b * hkv)](
        q, c_norm, _key_descriptor(c_norm, bn, tma), m_part, l_part, m_part if hist is None else hist, qk_scale,
        t_q, t_k, n_norm, cdiv(norm_tiles, nsplit_l), WIN=win_n, STRIDE=stride_n, NSPLIT=nsplit_l, TMA=tma,
        HIST=hist is not None, **common,
        **launch(warps, stages, pdl=pdl))

    # 2. block scores of the candidate blocks, blocks split like the keys above
    scores = torch.empty((b * hkv, t_q, nb), dtype=torch.float32, device=dev)
    score_tiles = cdiv(nb * r, bn)
    nsplit_s = min(cdiv(2 * num_sms(dev), n_q * b * hkv), score_tiles)
    launcher(_score_kernel, direct)[(n_q, nsplit_s, b * hkv)](
        q, c1, _key_descriptor(c1, bn, tma), m_part, l_part, scores, m_part if hist is None else hist, qk_scale,
        t_q, t_k, n1, n_norm, nb, cdiv(score_tiles, nsplit_s), *forcing, WIN=kernel_size, STRIDE=kernel_stride,
        R=r, TAIL=tail, BLOCK=block_size, NSPLIT_L=nsplit_l, APPROX=approx, WIN2=C2_FACTOR * kernel_size,
        STRIDE2=C2_FACTOR * kernel_stride,
        TMA=tma, HIST=hist is not None, EARLY=few and EARLY_SCORES, **common, **launch(warps, stages, pdl=pdl))
    return scores


#: split key ranges (decode, short chunks): the score kernel computes its first key tile's logits before it waits
#: for the normalizer kernel (programmatic dependent launch), so that load overlaps the kernel before
EARLY_SCORES = True

#: the stage-1 kernels' compressed-key tiles by TMA where :func:`_tma_keys` allows it: the same tiles (rows past
#: the keys read as zeros either way), so the same scores bit for bit
TMA_KEYS = True


def _tma_keys(c: torch.Tensor, d: int, bd: int, direct: bool) -> bool:
    """Whether the stage-1 kernels load the compressed keys ``c`` by TMA: direct launches only (traced calls keep
    per-thread loads, as stage 2's gathers), an unpadded head dimension, and :func:`tma_ready` keys."""
    return TMA_KEYS and direct and d == bd and tma_ready(c)


def _key_descriptor(c: torch.Tensor, bn: int, tma: bool):
    """:func:`row_descriptor` of ``c`` ``[B, N, Hkv, D]`` for ``bn``-key tiles with ``tma``, else ``c`` itself
    (unused by the kernels)."""
    return row_descriptor(c, bn) if tma else c


#: top-k launches on CUDA: block scores per program ("elems": rows = elems // NBP, at least one), one warp per
#: "per_warp" scores of a row ("row_warps") or of the program's tile, at least "min_warps" warps (at most 16);
#: "decode" for one query per row (the selection of a decode step), "prefill" otherwise. bench/topk_launch_ab.py
#: (H200, 2026-11-29, same indices): one row per program (two below 512 candidates) with a warp per 512 of its
#: candidates took the prefill top-k from 5.86 to 3.24 ms at 128K and from 0.58 to 0.21 ms at 32K (before: tiles
#: of 4096 scores, a warp per 512 of them, at least 4; the multi-row tiles split each row over warps, so every
#: probe of the bisection summed across warps).
TOPK_LAUNCH = {"prefill": {"elems": 512, "per_warp": 512, "min_warps": 1, "row_warps": True},
               "decode": {"elems": 4096, "per_warp": 512, "min_warps": 4, "row_warps": False}}


def topk_blocks(scores: torch.Tensor, out: torch.Tensor, t_k: int, block_size: int, init_blocks: int,
                local_blocks: int, *, direct: bool, hist: torch.Tensor | None = None) -> torch.Tensor:
    """Forcing + top-k of unforced block scores ``[B*Hkv, Tq, nb]`` (fp32, the last ``Tq`` of ``t_k``
    positions; only candidates ``b <= b_t`` are read) into ``out`` ``[B, Hkv, Tq, topk]`` (int64): the launch
    of :func:`_topk_kernel`, same result as :func:`mixarch.ops.infllm_v2.select.select_blocks`. ``hist``
    (``Tq = 1``): the bucket counts of :func:`block_scores`, which must match ``scores``."""
    t_q, nb, topk = scores.shape[1], scores.shape[2], out.shape[-1]
    if hist is not None and t_q != 1:
        raise ValueError(f"topk_blocks: hist is for one query per row, got Tq = {t_q}")
    pdl = pdl_enabled(scores.device, direct)
    start = 0
    for nbp, end in _row_ranges(t_q, t_k, block_size, nb):
        br, warps = _topk_tile(nbp, end - start, t_q == 1, scores.is_cuda)
        launcher(_topk_kernel, direct)[(cdiv(end - start, br), scores.shape[0])](
            scores, scores if hist is None else hist, out, t_q, t_k, nb, init_blocks, local_blocks, start, end,
            BLOCK=block_size, TOPK=topk, TOPKP=pow2(topk), BR=br, NBP=nbp, HIST=hist is not None,
            **launch(warps, 1, pdl=pdl))
        start = end
    return out


def _topk_tile(nbp: int, rows: int, decode: bool, cuda: bool) -> tuple[int, int]:
    """``(rows per program, warps)`` of a top-k launch over ``rows`` rows of ``nbp`` candidate slots
    (:data:`TOPK_LAUNCH`; 16 rows per program off CUDA, where the interpreter runs one program at a time)."""
    cfg = TOPK_LAUNCH["decode" if decode else "prefill"]
    br = max(1, min(pow2(rows), cfg["elems"] // nbp if cuda else 16))
    return br, max(cfg["min_warps"], min(16, (nbp if cfg["row_warps"] else br * nbp) // cfg["per_warp"]))


def _row_ranges(t_q: int, t_k: int, block_size: int, nb: int) -> list[tuple[int, int]]:
    """The top-k launches: ``(candidates tile NBP, end row)`` for consecutive row ranges starting at row 0.
    Query ``i`` has ``b_t + 1`` candidate blocks, growing with ``i``: rows are grouped by the power of two (at
    least 16) that holds their candidates, so that early rows of a long prefill do not sort a tile sized for
    the last row (at 128K: a third fewer key comparisons than one launch with 2048-wide tiles)."""
    ranges, start, width, last = [], 0, 16, pow2(nb, 16)
    while start < t_q:
        end = t_q if width >= last else min(t_q, max(0, width * block_size - (t_k - t_q)))
        if end > start:
            ranges.append((width, end))
            start = end
        width *= 2
    return ranges


def triton_infllm_v2_select(q: torch.Tensor, compressed_k: torch.Tensor, compressed_k2: torch.Tensor | None,
                            t_k: int, *, block_size: int, kernel_size: int, kernel_stride: int, init_blocks: int,
                            local_blocks: int, topk: int, scale: float, exact_normalizer: bool) -> torch.Tensor:
    """Triton ``infllm_v2_select``: int64 ``[B, Hkv, Tq, topk]``, ascending block indices then ``-1``.

    Same arguments as :func:`mixarch.ops.infllm_v2.attention.reference_infllm_v2_select`: ``q``
    ``[B, Tq, Hq, D]`` (the last ``Tq`` of ``t_k`` positions), ``compressed_k`` / ``compressed_k2``
    ``[B, Nc, Hkv, D]`` (C2 only for the approximate normalizer). Needs :func:`supports_select`.
    """
    if not exact_normalizer and compressed_k2 is None:
        raise ValueError("the approximate normalizer needs the C2 compressed keys")
    args = (q.detach(), compressed_k.detach(), None if compressed_k2 is None else compressed_k2.detach(), t_k,
            block_size, kernel_size, kernel_stride, init_blocks, local_blocks, topk, scale, exact_normalizer)
    return _select(*args, direct=True) if eager(*args[:3]) else infllm_v2_select_op(*args)
