"""Chunked Lightning attention in Triton: forward and backward by segment-parallel state passing.

Tokens are flattened (``[B * T]`` rows, or the packed ``T`` of ``cu_seqlens``) and cut into *segments* of
``segment`` tokens (a multiple of the chunk ``C``) that never span two sequences. One program per (segment,
head, ``STATE_TILE``-wide slice of the ``[Dk, Dv]`` fp32 state, which it keeps in registers); a segment's slices
are neighbouring programs, so they share their q/k/v loads through L2. Forward:

1. :func:`_segment_state`: each segment's own state ``L_j = sum_i lambda^(len-1-i) k_i^T v_i`` (reads k, v, but
   not the chunks whose weights all underflow to exact zeros: :data:`UNDERFLOW_LOG2`; on Hopper GPUs, direct
   launches take it in Gluon, :mod:`.gluon_state`).
2. :func:`_scan`: per (sequence, head, state tile) the state entering each segment,
   ``E_{j+1} = lambda^len_j E_j + L_j`` from ``initial_state``, and the final state (one state per segment).
3. :func:`_chunk_fwd`: per segment, chunk by chunk: ``o = ((q k^T) * D) v + scale lambda^(r+1) q S`` with
   ``D_rc = scale lambda^(r-c)`` (r >= c), then ``S = lambda^L S + k^T (lambda^(L-1-c) v)`` (reads q, k, v;
   writes o). On Hopper GPUs, direct launches take the same sweep written in Gluon
   (:mod:`.gluon_sweep`), which keeps a chunk's independent matmuls in flight together.

Backward mirrors it: ``R_j = scale sum_r lambda^(r+1) q_r^T do_r`` per segment (reads q, do), a reverse scan
from the final state's gradient (ends in ``dh0``), then :func:`_chunk_bwd_dq` (forward sweep from the saved
``E_j``), :func:`_chunk_bwd_dk` and :func:`_chunk_bwd_dv` (reverse sweeps with the gradient ``X`` arriving from
the right).

Dots take 16-bit operands (q's dtype) with fp32 accumulation, or fp32 ``ieee`` operands for fp32 inputs and
under ``TRITON_INTERPRET=1`` (the interpreter computes 16-bit dots wrongly). The segment length is a runtime argument, not a
``constexpr``: it changes with ``T``, and a constexpr would compile the kernels again for every new length. Decay weights multiply the
smaller operand or the dot's result rows, never a ``[C, 128]`` fp32 copy of q or k (register pressure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mixarch.kernels.triton import cdiv, interpreting, launcher, pow2
from mixarch.kernels.triton.lightning import gluon_state, gluon_sweep

LOG2E = tl.constexpr(1.4426950408889634)
CHUNK = 16 if interpreting() else 64  # tokens per chunk (the interpreter: small, to exercise many chunks)
STATE_TILE = 16 if interpreting() else 64  # a program's slice of the [Dk, Dv] state: at most [128, 64] fp32
#: the segment-state passes (forward k, v; backward q, do) do not read the chunks whose decay weights all
#: underflow: a weight ``2^-x`` with ``x >= UNDERFLOW_LOG2`` is exactly 0 in fp32 (below half the smallest subnormal,
#: 2^-150, with margin for ``exp2``'s approximation), so those chunks only add exact zeros and the states are the
#: same bit for bit without them (finite inputs: a NaN or inf there no longer reaches later segments' states).
#: With the ALiBi slopes of 32 heads, 8192-token segments read 43% of their chunks (4096: 55%; the 16384-token
#: segments of 128K inputs, fewer still). 0: read every chunk
UNDERFLOW_LOG2 = 160.0


def _configs(warps: int, stages: int) -> list[triton.Config]:
    """The launch config (4 warps, 1 stage under the interpreter). Measured on an H200 with Triton 3.6
    (T = 128K, 32 heads of 128, bf16): the chunk kernels hold a [128, 64] fp32 state slice plus [64, 64] score
    tiles; at 4 warps and 2 stages they take 255 registers without spills and run 1.4x faster than at 8 warps
    (198-217 registers, one program per SM). ``_segment_state`` is fastest at 8 warps, 2 stages. One config
    each: the autotuner's key has no T, so a choice made on a short call would stick for long ones."""
    if interpreting():
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=warps, num_stages=stages)]


@triton.jit
def _dot(a, b, acc, DT: tl.constexpr, IEEE: tl.constexpr):
    """``acc + a @ b`` (``acc`` None: zeros) in fp32: fp32 ieee operands, or operands cast to ``DT``."""
    if IEEE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a.to(DT), b.to(DT), acc)


@triton.jit
def _slot(j, slot_start, slot_len, T, NSEG, SEG, VARLEN: tl.constexpr):
    """First flattened token (int64) and length of segment slot ``j`` (length 0: an unused slot)."""
    if VARLEN:
        g0 = tl.load(slot_start + j).to(tl.int64)
        n = tl.load(slot_len + j)
    else:
        s = j % NSEG
        g0 = (j // NSEG).to(tl.int64) * T + s * SEG
        n = tl.minimum(SEG, T - s * SEG)
    return g0, n


@triton.jit
def _decay_matrix(r, s2, scale, TRANSPOSED: tl.constexpr):
    """``scale * lambda^(row-col)`` below the diagonal (``[r, c]``), or its transpose (``[c, r]``), else 0."""
    if TRANSPOSED:
        diff = r[None, :] - r[:, None]
    else:
        diff = r[:, None] - r[None, :]
    return tl.where(diff >= 0, scale * tl.exp2(-diff.to(tl.float32) * s2), 0.0)


@triton.jit
def _program(D: tl.constexpr, TD: tl.constexpr, slot_start, slot_len, T, NSEG, SEG,
             VARLEN: tl.constexpr):
    """This program's segment (first token, length), head and ``TD``-wide tile of a ``D``-wide state dim."""
    n_tiles = tl.cdiv(D, TD)
    g0, n = _slot(tl.program_id(0) // n_tiles, slot_start, slot_len, T, NSEG, SEG, VARLEN)
    tile = (tl.program_id(0) % n_tiles) * TD + tl.arange(0, TD)
    return tl.program_id(0) // n_tiles, tl.program_id(1), g0, n, tile


@triton.jit
def _load_state(ptr, j, h, ik, iv, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr):
    """Rows ``ik``, columns ``iv`` of the fp32 state ``ptr[j, h]`` (``[n_slots, H, DK, DV]``), zeros outside."""
    base = (j * H + h).to(tl.int64) * (DK * DV)
    return tl.load(ptr + base + ik[:, None] * DV + iv[None, :], mask=(ik < DK)[:, None] & (iv < DV)[None, :],
                   other=0.0)


@triton.jit
def _rows(x, rows, valid, h, cols, H: tl.constexpr, D: tl.constexpr):
    """Chunk rows ``rows`` of head ``h``, columns ``cols`` of ``x`` (``[*, H, D]``), zeros outside."""
    return tl.load(x + rows[:, None] * (H * D) + h * D + cols[None, :], mask=valid[:, None] & (cols < D)[None, :],
                   other=0.0)


@triton.jit
def _store_rows(x, value, rows, valid, h, cols, H: tl.constexpr, D: tl.constexpr):
    tl.store(x + rows[:, None] * (H * D) + h * D + cols[None, :], value.to(x.dtype.element_ty),
             mask=valid[:, None] & (cols < D)[None, :])


@triton.jit
def _weighted_chunks(n, s2, C: tl.constexpr, REVERSE: tl.constexpr, UNDERFLOW: tl.constexpr):
    """Chunks ``[lo, hi)`` (indices) of a segment of ``n`` tokens whose state-pass weights are not all exactly 0:
    ``lambda^m = 2^-(m * s2)`` with ``m = n-1-i`` (forward) or ``i+1`` (``REVERSE``) is taken as 0 from
    ``m * s2 >= UNDERFLOW`` on (:data:`UNDERFLOW_LOG2`; 0: every chunk)."""
    lo = n * 0
    hi = tl.cdiv(n, C)
    if UNDERFLOW > 0:
        # the largest exponent m whose weight is kept (n when none underflows; s2 = 0 is no decay)
        m_keep = tl.minimum(UNDERFLOW / tl.maximum(s2, 1e-30), n.to(tl.float32)).to(tl.int32)
        if REVERSE:  # rows i < m_keep
            hi = tl.minimum(hi, tl.cdiv(m_keep, C))
        else:  # rows i >= n - 1 - m_keep
            lo = tl.maximum(n - 1 - m_keep, 0) // C
    return lo, hi


@triton.autotune(configs=_configs(warps=8, stages=2), key=["DA", "DB", "C", "REVERSE"])
@triton.jit
def _segment_state(a, b, decay, out, slot_start, slot_len, T, NSEG, scale, H: tl.constexpr, DA: tl.constexpr,
                   DB: tl.constexpr, BA: tl.constexpr, TB: tl.constexpr, C: tl.constexpr, SEG,
                   REVERSE: tl.constexpr, VARLEN: tl.constexpr, IEEE: tl.constexpr, UNDERFLOW: tl.constexpr):
    """``out[j, h, :, tile] = sum_i w_i a_i^T b_i[tile]`` over segment ``j``: ``w_i = lambda^(len-1-i)``
    (forward: k, v) or ``scale lambda^(i+1)`` (``REVERSE``, backward: q, do). a ``[*, H, DA]``, b ``[*, H, DB]``,
    out ``[n_slots, H, DA, DB]`` fp32; one program per (``TB`` columns, segment), head. Chunks whose weights all
    underflow are not read (:func:`_weighted_chunks`)."""
    j, h, g0, n, ib = _program(DB, TB, slot_start, slot_len, T, NSEG, SEG, VARLEN)
    s2 = tl.load(decay + h) * LOG2E
    r = tl.arange(0, C)
    ia = tl.arange(0, BA)
    acc = tl.zeros([BA, TB], dtype=tl.float32)
    lo, hi = _weighted_chunks(n, s2, C, REVERSE, UNDERFLOW)
    for c0 in range(lo * C, hi * C, C):
        rows = g0 + c0 + r
        valid = (c0 + r) < n
        ta = _rows(a, rows, valid, h, ia, H, DA)
        tb = _rows(b, rows, valid, h, ib, H, DB)
        if REVERSE:
            w = scale * tl.exp2(-(c0 + r + 1).to(tl.float32) * s2)
        else:
            w = tl.exp2(-(n - 1 - c0 - r).to(tl.float32) * s2)
        w = tl.where(valid, w, 0.0)
        acc = _dot(tl.trans(ta), tb * w[:, None], acc, a.dtype.element_ty, IEEE)
    base = (j * H + h).to(tl.int64) * (DA * DB)
    tl.store(out + base + ia[:, None] * DB + ib[None, :], acc, mask=(ia < DA)[:, None] & (ib < DB)[None, :])


@triton.jit
def _scan(local, init, enter, final, decay, slot_len, seq_first, T, NSEG, H: tl.constexpr, DA: tl.constexpr,
          DB: tl.constexpr, BA: tl.constexpr, BB: tl.constexpr, SEG, REVERSE: tl.constexpr,
          VARLEN: tl.constexpr, HAS_INIT: tl.constexpr):
    """Per (sequence, head, state tile): ``enter[j] = state; state = lambda^len_j state + local[j]`` over the
    sequence's segments (last to first when ``REVERSE``), starting from ``init`` (or zeros); then
    ``final = state``. Forward: the states entering each segment and the final state; backward: the gradients
    arriving from the right of each segment and ``dh0``."""
    i = tl.program_id(0)
    h = tl.program_id(1)
    tile = tl.program_id(2)
    n_b = tl.cdiv(DB, BB)
    ia = (tile // n_b) * BA + tl.arange(0, BA)
    ib = (tile % n_b) * BB + tl.arange(0, BB)
    mask = (ia < DA)[:, None] & (ib < DB)[None, :]
    off = ia[:, None] * DB + ib[None, :]
    s2 = tl.load(decay + h) * LOG2E
    if VARLEN:
        first = tl.load(seq_first + i)
        count = tl.load(seq_first + i + 1) - first
    else:
        first = i * NSEG
        count = NSEG
    seq_base = (i * H + h).to(tl.int64) * (DA * DB)
    if HAS_INIT:
        state = tl.load(init + seq_base + off, mask=mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros([BA, BB], dtype=tl.float32)
    for t in range(0, count):
        if REVERSE:
            j = first + count - 1 - t
        else:
            j = first + t
        if VARLEN:
            n = tl.load(slot_len + j)
        else:
            n = tl.minimum(SEG, T - (j - first) * SEG)
        base = (j * H + h).to(tl.int64) * (DA * DB)
        tl.store(enter + base + off, state, mask=mask)
        state = state * tl.exp2(-n.to(tl.float32) * s2) + tl.load(local + base + off, mask=mask, other=0.0)
    tl.store(final + seq_base + off, state, mask=mask)


@triton.autotune(configs=_configs(warps=4, stages=2), key=["DK", "DV", "C"])
@triton.jit
def _chunk_fwd(q, k, v, decay, enter, o, slot_start, slot_len, T, NSEG, scale, H: tl.constexpr, DK: tl.constexpr,
               DV: tl.constexpr, BK: tl.constexpr, TV: tl.constexpr, C: tl.constexpr, SEG,
               VARLEN: tl.constexpr, IEEE: tl.constexpr, IEEE_AV: tl.constexpr):
    """``TV`` columns of o for one segment and head, from the state entering it (``enter[j, h]``): per chunk
    ``o = ((q k^T) * D) v + scale lambda^(r+1) q S``, then ``S = lambda^L S + (lambda^(L-1-c) k)^T v``."""
    j, h, g0, n, iv = _program(DV, TV, slot_start, slot_len, T, NSEG, SEG, VARLEN)
    DT = q.dtype.element_ty
    s2 = tl.load(decay + h) * LOG2E
    r = tl.arange(0, C)
    ik = tl.arange(0, BK)
    state = _load_state(enter, j, h, ik, iv, H, DK, DV)
    dmat = _decay_matrix(r, s2, scale, False)
    qdec = scale * tl.exp2(-(r + 1).to(tl.float32) * s2)  # scale * lambda^(r+1)
    for c0 in range(0, n, C):
        rows = g0 + c0 + r
        valid = (c0 + r) < n
        length = tl.minimum(n - c0, C)
        tq = _rows(q, rows, valid, h, ik, H, DK)
        tk = _rows(k, rows, valid, h, ik, H, DK)
        tv = _rows(v, rows, valid, h, iv, H, DV)
        scores = _dot(tq, tl.trans(tk), None, DT, IEEE) * dmat
        out = _dot(scores, tv, _dot(tq, state, None, DT, IEEE) * qdec[:, None], DT, IEEE_AV)
        _store_rows(o, out, rows, valid, h, iv, H, DV)
        w = tl.where(valid, tl.exp2(-(length - 1 - r).to(tl.float32) * s2), 0.0)
        state = _dot(tl.trans(tk), tv * w[:, None], state * tl.exp2(-length.to(tl.float32) * s2), DT, IEEE)


@triton.autotune(configs=_configs(warps=4, stages=2), key=["DK", "DV", "C"])
@triton.jit
def _chunk_bwd_dq(do, k, v, decay, enter, dq, slot_start, slot_len, T, NSEG, scale, H: tl.constexpr,
                  DK: tl.constexpr, DV: tl.constexpr, TK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
                  SEG, VARLEN: tl.constexpr, IEEE: tl.constexpr, IEEE_AV: tl.constexpr):
    """``TK`` columns of ``dq = ((do v^T) * D) k + scale lambda^(r+1) do S^T``, sweeping forward from
    ``enter[j, h]`` (rows ``TK`` of the state)."""
    j, h, g0, n, ik = _program(DK, TK, slot_start, slot_len, T, NSEG, SEG, VARLEN)
    DT = k.dtype.element_ty
    s2 = tl.load(decay + h) * LOG2E
    r = tl.arange(0, C)
    iv = tl.arange(0, BV)
    state = _load_state(enter, j, h, ik, iv, H, DK, DV)
    dmat = _decay_matrix(r, s2, scale, False)
    qdec = scale * tl.exp2(-(r + 1).to(tl.float32) * s2)
    for c0 in range(0, n, C):
        rows = g0 + c0 + r
        valid = (c0 + r) < n
        length = tl.minimum(n - c0, C)
        tdo = _rows(do, rows, valid, h, iv, H, DV)
        tk = _rows(k, rows, valid, h, ik, H, DK)
        tv = _rows(v, rows, valid, h, iv, H, DV)
        ds = _dot(tdo, tl.trans(tv), None, DT, IEEE) * dmat
        out = _dot(ds, tk, _dot(tdo, tl.trans(state), None, DT, IEEE) * qdec[:, None], DT, IEEE_AV)
        _store_rows(dq, out, rows, valid, h, ik, H, DK)
        w = tl.where(valid, tl.exp2(-(length - 1 - r).to(tl.float32) * s2), 0.0)
        state = _dot(tl.trans(tk * w[:, None]), tv, state * tl.exp2(-length.to(tl.float32) * s2), DT, IEEE)


@triton.autotune(configs=_configs(warps=4, stages=2), key=["DK", "DV", "C"])
@triton.jit
def _chunk_bwd_dk(q, v, do, decay, arrive, dk, slot_start, slot_len, T, NSEG, scale, H: tl.constexpr,
                  DK: tl.constexpr, DV: tl.constexpr, TK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
                  SEG, VARLEN: tl.constexpr, IEEE: tl.constexpr, IEEE_AV: tl.constexpr):
    """``TK`` columns of ``dk = ((v do^T) * D^T) q + lambda^(L-1-c) v X^T``, sweeping the chunks last to first
    with rows ``TK`` of the state gradient ``X`` arriving from the right (``arrive[j, h]``), then
    ``X = lambda^L X + scale (lambda^(r+1) q)^T do``."""
    j, h, g0, n, ik = _program(DK, TK, slot_start, slot_len, T, NSEG, SEG, VARLEN)
    DT = q.dtype.element_ty
    s2 = tl.load(decay + h) * LOG2E
    r = tl.arange(0, C)
    iv = tl.arange(0, BV)
    state = _load_state(arrive, j, h, ik, iv, H, DK, DV)
    dmat_t = _decay_matrix(r, s2, scale, True)  # [c, r]
    qdec = scale * tl.exp2(-(r + 1).to(tl.float32) * s2)
    n_chunks = tl.cdiv(n, C)
    for t in range(0, n_chunks):
        c0 = (n_chunks - 1 - t) * C
        rows = g0 + c0 + r
        valid = (c0 + r) < n
        length = tl.minimum(n - c0, C)
        tq = _rows(q, rows, valid, h, ik, H, DK)
        tv = _rows(v, rows, valid, h, iv, H, DV)
        tdo = _rows(do, rows, valid, h, iv, H, DV)
        w = tl.where(valid, tl.exp2(-(length - 1 - r).to(tl.float32) * s2), 0.0)
        ds_t = _dot(tv, tl.trans(tdo), None, DT, IEEE) * dmat_t
        out = _dot(ds_t, tq, _dot(tv, tl.trans(state), None, DT, IEEE) * w[:, None], DT, IEEE_AV)
        _store_rows(dk, out, rows, valid, h, ik, H, DK)
        state = _dot(tl.trans(tq * qdec[:, None]), tdo, state * tl.exp2(-length.to(tl.float32) * s2), DT, IEEE)


@triton.autotune(configs=_configs(warps=4, stages=2), key=["DK", "DV", "C"])
@triton.jit
def _chunk_bwd_dv(q, k, do, decay, arrive, dv, slot_start, slot_len, T, NSEG, scale, H: tl.constexpr,
                  DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, TV: tl.constexpr, C: tl.constexpr,
                  SEG, VARLEN: tl.constexpr, IEEE: tl.constexpr, IEEE_AV: tl.constexpr):
    """``TV`` columns of ``dv = ((k q^T) * D^T) do + lambda^(L-1-c) k X``, sweeping the chunks last to first
    with columns ``TV`` of the state gradient ``X`` arriving from the right (``arrive[j, h]``)."""
    j, h, g0, n, iv = _program(DV, TV, slot_start, slot_len, T, NSEG, SEG, VARLEN)
    DT = q.dtype.element_ty
    s2 = tl.load(decay + h) * LOG2E
    r = tl.arange(0, C)
    ik = tl.arange(0, BK)
    state = _load_state(arrive, j, h, ik, iv, H, DK, DV)
    dmat_t = _decay_matrix(r, s2, scale, True)  # [c, r]
    qdec = scale * tl.exp2(-(r + 1).to(tl.float32) * s2)
    n_chunks = tl.cdiv(n, C)
    for t in range(0, n_chunks):
        c0 = (n_chunks - 1 - t) * C
        rows = g0 + c0 + r
        valid = (c0 + r) < n
        length = tl.minimum(n - c0, C)
        tq = _rows(q, rows, valid, h, ik, H, DK)
        tk = _rows(k, rows, valid, h, ik, H, DK)
        tdo = _rows(do, rows, valid, h, iv, H, DV)
        w = tl.where(valid, tl.exp2(-(length - 1 - r).to(tl.float32) * s2), 0.0)
        scores_t = _dot(tk, tl.trans(tq), None, DT, IEEE) * dmat_t
        out = _dot(scores_t, tdo, _dot(tk, state, None, DT, IEEE) * w[:, None], DT, IEEE_AV)
        _store_rows(dv, out, rows, valid, h, iv, H, DV)
        state = _dot(tl.trans(tq), tdo * qdec[:, None], state * tl.exp2(-length.to(tl.float32) * s2), DT, IEEE)


@dataclass(frozen=True)
class Layout:
    """How the tokens are cut into segments: ``n_slots`` segment slots for ``n_seqs`` sequences; for packed
    inputs the slots' first token and length (``int32 [n_slots]``, length 0 = unused) and each sequence's first
    slot (``int32 [n_seqs + 1]``), else ``n_seg`` slots per sequence of ``T`` tokens."""

    n_slots: int
    n_seqs: int
    n_seg: int
    segment: int
    slot_start: torch.Tensor | None = None
    slot_len: torch.Tensor | None = None
    seq_first: torch.Tensor | None = None

    @property
    def varlen(self) -> bool:
        return self.slot_start is not None


def segment_size(n_tokens: int, n_heads: int, chunk: int = CHUNK) -> int:
    """Tokens per segment: about 256 (segment, head) programs, between 256 and 16384 tokens (``2 * chunk``
    under the interpreter), a power-of-two multiple of ``chunk``. Longer segments leave the state passes more
    chunks whose weights underflow (:data:`UNDERFLOW_LOG2`). On an H200 (32 heads of 128, bf16,
    ``bench/lightning_skip_ab.py``, 2026-11-29), segments twice as long as with ~512 programs took the forward at
    128K from 1.42-1.44 to 1.37-1.40 ms (16384 against 8192 tokens), at 64K from 0.76-0.80 to 0.71-0.78, at 32K
    from 0.538 to 0.510, at 16K from 0.302-0.304 to 0.279-0.281, and left 4K unchanged (noise: 0.37-0.39 ms)."""
    if interpreting():
        return 2 * chunk
    target = max(1, n_tokens * n_heads // 256)
    return min(16384, max(256, chunk, 2 ** int(math.log2(target))))


def make_layout(b: int, t: int, cu_seqlens: torch.Tensor | None, segment: int) -> Layout:
    """Segment slots of ``B`` sequences of ``T`` tokens, or of the packed sequences ``cu_seqlens`` (on device,
    without a host sync: at most ``T // segment + N`` slots)."""
    if cu_seqlens is None:
        n_seg = cdiv(t, segment)
        return Layout(b * n_seg, b, n_seg, segment)
    n = cu_seqlens.numel() - 1
    n_slots = t // segment + n
    cu = cu_seqlens.to(torch.int64)
    counts = (cu[1:] - cu[:-1] + segment - 1) // segment
    first = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    slots = torch.arange(n_slots, device=cu.device)
    seq = torch.searchsorted(first[1:], slots, right=True)  # the sequence of each slot (n: unused)
    seq_c = seq.clamp(max=n - 1)
    start = cu[seq_c] + (slots - first[seq_c]) * segment
    length = torch.where(seq < n, (cu[seq_c + 1] - start).clamp(0, segment), 0)
    return Layout(n_slots, n, 0, segment, start.to(torch.int32), length.to(torch.int32), first.to(torch.int32))


def _pad(d: int) -> int:
    return pow2(d, 16)


def _tile(d: int, most: int) -> int:
    return min(most, _pad(d))


def _grid(d: int, lay: Layout, h: int) -> tuple[int, int]:
    """(state tiles * segment slots, heads): the tiles of one segment are neighbours, so they run together and
    share their loads of q, k, v, do through L2."""
    return cdiv(d, _tile(d, STATE_TILE)) * lay.n_slots, h


def _states(lay: Layout, a: torch.Tensor, b: torch.Tensor, decay: torch.Tensor, init: torch.Tensor | None,
            scale: float, chunk: int, reverse: bool, direct: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment local states then the scan: the state at each segment's edge ``[n_slots, H, Da, Db]`` and
    the sequence-level result ``[n_seqs, H, Da, Db]`` (fp32)."""
    t, h, da = a.shape[1:]
    db = b.shape[3]
    local = None
    if direct and gluon_state.ready(a, b, chunk):
        local = gluon_state.try_segment_states(a, b, decay, lay, scale, reverse, UNDERFLOW_LOG2)
    if local is None:
        local = torch.empty(lay.n_slots, h, da, db, dtype=torch.float32, device=a.device)
        launcher(_segment_state, direct)[_grid(db, lay, h)](
            a, b, decay, local, lay.slot_start, lay.slot_len, t, lay.n_seg, scale, H=h, DA=da, DB=db,
            BA=_pad(da), TB=_tile(db, STATE_TILE), C=chunk, SEG=lay.segment, REVERSE=reverse, VARLEN=lay.varlen,
            IEEE=_ieee(a), UNDERFLOW=UNDERFLOW_LOG2)
    edge = torch.empty_like(local)
    result = torch.empty(lay.n_seqs, h, da, db, dtype=torch.float32, device=a.device)
    ta, tb = _tile(da, 32), _tile(db, 32)
    launcher(_scan, direct)[(lay.n_seqs, h, cdiv(da, ta) * cdiv(db, tb))](
        local, init, edge, result, decay, lay.slot_len, lay.seq_first, t, lay.n_seg, H=h, DA=da, DB=db, BA=ta,
        BB=tb, SEG=lay.segment, REVERSE=reverse, VARLEN=lay.varlen, HAS_INIT=init is not None, num_warps=4)
    return edge, result


def _ieee(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 or interpreting()


def _ieee_av(x: torch.Tensor, tile: int) -> bool:
    """fp32 operands for the dot whose left operand is an earlier dot's result (``scores @ v`` and its
    backward twins) when the state tile is narrower than 64. Triton 3.6 on an H100/H200 miscompiles that 16-bit
    dot for output tiles of 16 or 32 columns with Dk >= 64: wrong rows, and in fp16 an illegal memory access
    (found by the GPU conformance run: Dk = 64, Dv = 16, T = 1). Head dims of 64 and more never take this."""
    return _ieee(x) or tile < 64


def chunk_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor,
              initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None, scale: float, chunk: int,
              segment: int, *, direct: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward (``direct``: see :func:`~mixarch.kernels.triton.launcher`). q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]`` contiguous (one dtype); decay ``[H]`` fp32;
    initial_state ``[N, H, Dk, Dv]`` or None; cu_seqlens ``[N + 1]`` on q's device or None.

    Returns o ``[B, T, H, Dv]`` (q's dtype), the final state ``[N, H, Dk, Dv]`` and the states entering each
    segment ``[n_slots, H, Dk, Dv]`` (fp32; kept for the backward).
    """
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    lay = make_layout(b, t, cu_seqlens, segment)
    enter, final = _states(lay, k, v, decay, initial_state, scale, chunk, reverse=False, direct=direct)
    if direct and gluon_sweep.ready(q, k, v, chunk, _tile(dv, STATE_TILE)):
        o = gluon_sweep.try_sweep(q, k, v, decay, enter, lay, scale)
        if o is not None:
            return o, final, enter
    o = torch.empty(b, t, h, dv, dtype=q.dtype, device=q.device)
    launcher(_chunk_fwd, direct)[_grid(dv, lay, h)](
        q, k, v, decay, enter, o, lay.slot_start, lay.slot_len, t, lay.n_seg, scale, H=h, DK=dk, DV=dv,
        BK=_pad(dk), TV=_tile(dv, STATE_TILE), C=chunk, SEG=lay.segment, VARLEN=lay.varlen, IEEE=_ieee(q),
        IEEE_AV=_ieee_av(q, _tile(dv, STATE_TILE)))
    return o, final, enter


def chunk_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor,
              do: torch.Tensor, dht: torch.Tensor | None, cu_seqlens: torch.Tensor | None, scale: float, chunk: int,
              segment: int, *, direct: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of :func:`chunk_fwd` given ``enter`` (its third output), do ``[B, T, H, Dv]`` and the final
    state's gradient ``dht`` ``[N, H, Dk, Dv]`` (or None); returns dq, dk, dv (inputs' dtype) and dh0 (fp32)."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    lay = make_layout(b, t, cu_seqlens, segment)
    arrive, dh0 = _states(lay, q, do, decay, dht, scale, chunk, reverse=True, direct=direct)
    common = dict(H=h, DK=dk, DV=dv, C=chunk, SEG=lay.segment, VARLEN=lay.varlen, IEEE=_ieee(q))
    rows = dict(TK=_tile(dk, STATE_TILE), BV=_pad(dv), IEEE_AV=_ieee_av(q, _tile(dk, STATE_TILE)),
                **common)  # kernels tiling the state's rows
    cols = dict(BK=_pad(dk), TV=_tile(dv, STATE_TILE), IEEE_AV=_ieee_av(q, _tile(dv, STATE_TILE)),
                **common)  # ... and its columns
    slots = (lay.slot_start, lay.slot_len, t, lay.n_seg, scale)
    if (direct and dk == dv and gluon_sweep.ready(q, k, v, chunk, _tile(dv, STATE_TILE)) and do.is_contiguous()
            and do.data_ptr() % 16 == 0):
        grads = gluon_sweep.try_sweep_bwd(q, k, v, decay, enter, arrive, do, lay, scale)
        if grads is not None:
            return (*grads, dh0)
    dq, dk_, dv_ = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    launcher(_chunk_bwd_dq, direct)[_grid(dk, lay, h)](do, k, v, decay, enter, dq, *slots, **rows)
    launcher(_chunk_bwd_dk, direct)[_grid(dk, lay, h)](q, v, do, decay, arrive, dk_, *slots, **rows)
    launcher(_chunk_bwd_dv, direct)[_grid(dv, lay, h)](q, k, do, decay, arrive, dv_, *slots, **cols)
    return dq, dk_, dv_, dh0
