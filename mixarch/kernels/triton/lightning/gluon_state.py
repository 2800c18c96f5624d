"""The Lightning segment-state pass in Gluon, for Hopper GPUs: :func:`~.chunk._segment_state` with its tiles
streamed by TMA several chunks ahead and each chunk's matmul left in flight while the next chunk is weighted.

Per segment slot and head, ``out[j, h, :, tile] = sum_i w_i a_i^T b_i[tile]``: in the forward ``(a, b) = (k, v)``
and ``w_i = lambda^(len-1-i)``; in the backward (``REVERSE``) ``(a, b) = (q, do)`` and ``w_i = scale
lambda^(i+1)``. Per chunk the weighted rows ``w b`` are written to shared memory in the inputs' dtype (as
``_segment_state`` rounds them) and ``a^T (w b)`` is issued as an asynchronous ``wgmma`` onto the fp32
accumulator; the program waits for it only one chunk later, when its tiles' stage is refilled. The results equal
``_segment_state``'s bit for bit (tests/test_triton_lightning.py, on an H200). At T = 128K (B = 1, 32 heads of
128, bf16) the pass reading every chunk takes 0.525 ms against 0.635 ms, 4.1 TB/s; skipping the chunks whose
weights underflow (as ``_segment_state`` does), 0.259 ms with 8192-token segments and 0.209 ms with the
16384-token ones used there since (docs/benchmarks.md).

Taken where :func:`~.gluon_sweep.ready` allows the Gluon sweep (direct launches on compute capability 9.x,
16-bit, ``Dk = 128``, long inputs; ``gluon_sweep.ENABLED``) and :data:`ENABLED`; every other call takes
``_segment_state``.
"""

from __future__ import annotations

import torch

from mixarch.kernels.triton.lightning import gluon_sweep
from mixarch.kernels.triton.lightning.gluon_sweep import gluon

if gluon is not None:
    from mixarch.kernels.triton.lightning.gluon_sweep import (
        LOG2E,
        TensorDescriptor,
        _program,
        _sync,
        fence_async_shared,
        gl,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

#: take the Gluon state pass where it can run (False: always ``_segment_state``)
ENABLED = True
#: tokens per chunk, state columns per program, pipeline stages, warps (one program per multiprocessor: the whole
#: ``[128, 128]`` fp32 state in two warpgroups' registers, four stages of k / v tiles in flight)
CHUNK, TILE, STAGES, WARPS = 64, 128, 4, 8

if gluon is not None:

    @gluon.jit
    def _load_pair(a_desc, b_desc, row, col_a, col_b, bar, a_s, b_s, NBYTES: gl.constexpr):
        mbarrier.expect(bar, NBYTES)
        tma.async_copy_global_to_shared(a_desc, [row, col_a], bar, a_s)
        tma.async_copy_global_to_shared(b_desc, [row, col_b], bar, b_s)

    @gluon.jit
    def _states(a_desc, b_desc, decay, out, slot_start, slot_len, T, NSEG, SEG, scale, H: gl.constexpr,
                DA: gl.constexpr, DB: gl.constexpr, TB: gl.constexpr, C: gl.constexpr, STAGES: gl.constexpr,
                BW_LAYOUT: gl.constexpr, REVERSE: gl.constexpr, VARLEN: gl.constexpr, UNDERFLOW: gl.constexpr,
                num_warps: gl.constexpr):
        """``out[j, h, :, tile]`` (fp32 ``[n_slots, H, DA, DB]``) for one segment slot and head: ``_segment_state``'s
        program (same grid with ``TB`` columns), a / b ``[rows, H * D]`` descriptors with ``[C, DA]`` / ``[C, TB]``
        boxes; the same chunks skipped (those whose weights all underflow, ``UNDERFLOW``)."""
        j, h, tile, g0, n = _program(slot_start, slot_len, T, NSEG, SEG, DB // TB, VARLEN)
        s2 = gl.load(decay + h) * LOG2E
        c_lo = 0
        c_hi = gl.cdiv(n, C)
        if UNDERFLOW > 0:  # chunk._weighted_chunks (no Triton function can be called from Gluon)
            m_keep = gl.minimum(UNDERFLOW / gl.maximum(s2, 1e-30), n.to(gl.float32)).to(gl.int32)
            if REVERSE:
                c_hi = gl.minimum(c_hi, gl.cdiv(m_keep, C))
            else:
                c_lo = gl.maximum(n - 1 - m_keep, 0) // C
        n_chunks = c_hi - c_lo
        g0 = g0 + c_lo * C  # the segment's chunks from c_lo on, as a segment of n - c_lo * C tokens: the same
        n = n - c_lo * C  # weights lambda^(n-1-i) (forward; backward: c_lo = 0)
        col_a = h * DA
        col_b = h * DB + tile * TB
        dt: gl.constexpr = a_desc.dtype

        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                      instr_shape=[16, TB, 16])
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [256 // TB, TB // 8], [num_warps, 1], [1, 0])
        blk_a: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0])
        rb = gl.arange(0, C, layout=gl.SliceLayout(1, blk))
        ra = gl.arange(0, C, layout=gl.SliceLayout(1, blk_a))

        a_s = gl.allocate_shared_memory(dt, [STAGES, C, DA], a_desc.layout)
        b_s = gl.allocate_shared_memory(dt, [STAGES, C, TB], b_desc.layout)
        bw_s = gl.allocate_shared_memory(dt, [2, C, TB], BW_LAYOUT)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        NBYTES: gl.constexpr = (C * DA + C * TB) * dt.primitive_bitwidth // 8
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
        for i in gl.static_range(STAGES):
            if i < n_chunks:
                _load_pair(a_desc, b_desc, g0 + i * C, col_a, col_b, bars.index(i), a_s.index(i), b_s.index(i),
                           NBYTES)

        acc = gl.zeros([DA, TB], gl.float32, layout=mma)
        for c in range(n_chunks):
            st = c % STAGES
            mbarrier.wait(bars.index(st), (c // STAGES) & 1)
            as_ = a_s.index(st)
            c0 = c * C
            if n - c0 < C:  # rows past the segment (another segment or sequence): zeros, as _segment_state reads
                aa = as_.load(blk_a)  # (b's too: a zero weight would turn a NaN or inf there into a NaN here)
                as_.store(gl.where((c0 + ra < n)[:, None], aa, gl.zeros_like(aa)))
                bb = b_s.index(st).load(blk)
                b_s.index(st).store(gl.where((c0 + rb < n)[:, None], bb, gl.zeros_like(bb)))
            if REVERSE:
                w = scale * gl.exp2(-(c0 + rb + 1).to(gl.float32) * s2)
            else:
                w = gl.exp2(-(n - 1 - c0 - rb).to(gl.float32) * s2)
            w = gl.where(c0 + rb < n, w, 0.0)
            bw = b_s.index(st).load(blk).to(gl.float32) * w[:, None]
            bws = bw_s.index(c % 2)
            bws.store(bw.to(dt))  # the matmul that read this buffer (chunk c - 2) was waited on last chunk
            fence_async_shared()
            _sync()
            acc = warpgroup_mma(as_.permute((1, 0)), bws, acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))  # chunk c - 1's matmul is done
            if c >= 1:
                if c - 1 + STAGES < n_chunks:  # refill chunk c - 1's stage, now read
                    prev = (c - 1) % STAGES
                    _load_pair(a_desc, b_desc, g0 + (c - 1 + STAGES) * C, col_a, col_b, bars.index(prev),
                               a_s.index(prev), b_s.index(prev), NBYTES)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))
        ia = gl.arange(0, DA, layout=gl.SliceLayout(1, mma))
        ib = gl.arange(0, TB, layout=gl.SliceLayout(0, mma))
        base = (j * H + h).to(gl.int64) * (DA * DB)
        gl.store(out + base + ia[:, None] * DB + (tile * TB + ib)[None, :], acc)


def ready(a: torch.Tensor, b: torch.Tensor, chunk: int) -> bool:
    """Whether :func:`segment_states` can take this pass: :data:`ENABLED`, the Gluon sweep's conditions
    (:func:`~.gluon_sweep.ready`), ``Da = 128`` and ``Db`` a multiple of :data:`TILE`, 64-token chunks."""
    return (ENABLED and chunk == CHUNK and a.shape[-1] == 128 and b.shape[-1] % TILE == 0
            and gluon_sweep.ready(a, a, b, chunk, gluon_sweep.TILE))


def segment_states(a: torch.Tensor, b: torch.Tensor, decay: torch.Tensor, layout, scale: float,
                   reverse: bool, underflow: float) -> torch.Tensor:
    """The local state of every segment slot ``[n_slots, H, Da, Db]`` (fp32) for the segment ``layout`` of
    :func:`~.chunk.make_layout`: a ``[B, T, H, Da]``, b ``[B, T, H, Db]`` (k, v; or q, do when ``reverse``);
    chunks whose weights all underflow are skipped (``underflow``: :data:`~.chunk.UNDERFLOW_LOG2`)."""
    bs, t, h, da = a.shape
    db = b.shape[-1]
    box_a, box_b = gluon_sweep.smem_layout(CHUNK, da, a.dtype), gluon_sweep.smem_layout(CHUNK, TILE, a.dtype)
    a_desc = TensorDescriptor(a.view(bs * t, h * da), [bs * t, h * da], [h * da, 1], [CHUNK, da], box_a)
    b_desc = TensorDescriptor(b.view(bs * t, h * db), [bs * t, h * db], [h * db, 1], [CHUNK, TILE], box_b)
    out = torch.empty(layout.n_slots, h, da, db, dtype=torch.float32, device=a.device)
    _states[((db // TILE) * layout.n_slots, h)](
        a_desc, b_desc, decay, out, layout.slot_start, layout.slot_len, t, layout.n_seg, layout.segment, scale,
        H=h, DA=da, DB=db, TB=TILE, C=CHUNK, STAGES=STAGES, BW_LAYOUT=box_b, REVERSE=reverse,
        VARLEN=layout.varlen, UNDERFLOW=float(underflow), num_warps=WARPS)
    return out


def try_segment_states(a: torch.Tensor, b: torch.Tensor, decay: torch.Tensor, layout, scale: float,
                       reverse: bool, underflow: float) -> torch.Tensor | None:
    """:func:`segment_states`, or None (after a warning) where Gluon cannot compile it: the caller runs
    ``_segment_state``."""
    return gluon_sweep._compiled_or_none(segment_states, a, b, decay, layout, scale, reverse, underflow)
