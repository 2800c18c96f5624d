"""The Lightning chunk sweeps in Gluon, for Hopper GPUs: :func:`~.chunk._chunk_fwd` with a chunk's independent
matmuls in flight together, and the backward's dq, dk, dv sweeps by the same kernel with roles swapped.

Triton's ``tl.dot`` waits on each ``wgmma`` as soon as it is issued, so ``_chunk_fwd``'s four matmuls per chunk
run one after another. This kernel computes the same thing from the same tiles. Per chunk:

1. ``q k^T`` and ``q S`` are issued together. ``S`` is the state slice, kept as a 16-bit copy in shared memory.
2. Then ``scores v`` (accumulating onto ``scale lambda^(r+1) q S``) and the state update
   ``S = lambda^L S + k^T (w v)`` are issued together.

Tiles of q, k and v arrive by TMA two chunks ahead. On an H200 at T = 128K (B = 1, 32 heads of 128, bf16) the sweep
takes ~1.3 ms against ~1.6 ms (docs/benchmarks.md), and the outputs are bit-identical to ``_chunk_fwd``'s.

The backward's three sweeps have the forward's shape (:func:`sweep_bwd`): dq sweeps forward with (do, v, k) in the
roles of (q, k, v) from the entering states read transposed (``STATE_T``); dk and dv sweep the chunks last to first
(``REVERSE``: transposed decay matrix, the row weights of q and k swapped) from the state gradients, with (v, do, q)
and (k, q, do). They give ``_chunk_bwd_dq`` / ``_dk`` / ``_dv``'s results bit for bit, 4.7 against 5.3 ms for
the backward at 128K on an H200.

Gluon kernels have no interpreter, so this path is for direct launches on compute capability 9.x only. It covers
16-bit inputs, ``Dk = 128``, ``Dv`` a multiple of 64 and 64-token chunks, and only long inputs
(:data:`MIN_TOKEN_HEADS`: its launch costs more host time than a Triton launch). Every other call, and every
traced one, takes ``_chunk_fwd``.
"""

from __future__ import annotations

import warnings

import torch
import triton
from triton.compiler.errors import CompilationError

from mixarch.kernels.triton import interpreting, tma_ready

try:  # Gluon is experimental: its absence (or a changed API) leaves the Triton sweep in place
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except (ImportError, AttributeError):  # pragma: no cover - depends on the installed Triton
    gluon = None

#: take the Gluon sweep where :func:`ready` allows it (False: always ``_chunk_fwd``)
ENABLED = True
#: the least ``B * T * H`` (token-heads) that takes the Gluon sweep. Its launch costs far more host time than a
#: Triton launch (an eager forward on an H200 host: 4K tokens x 32 heads 0.70 against 0.22 ms, 16K 0.64 against
#: 0.36 ms, 32K 0.70 against 0.66 ms, all host-bound), so only sweeps long enough to hide it take it (64K x 32
#: heads: 1.02 against 1.19 ms; 128K: 2.03 against 2.27 ms). docs/benchmarks.md
MIN_TOKEN_HEADS = 1 << 21
#: tokens per chunk, state columns per program, pipeline stages (two programs per multiprocessor: ~113 KB of
#: shared memory each; three stages leave one and were slower)
CHUNK, TILE, STAGES = 64, 64, 2
#: under measurement: the sweeps by :mod:`.gluon_sweep_t` (the state transposed in registers)
TRANSPOSED = False

if gluon is not None:
    LOG2E: gl.constexpr = gl.constexpr(1.4426950408889634)

    if hasattr(gl, "thread_barrier"):  # Triton 3.6
        @gluon.jit
        def _sync():
            gl.thread_barrier()
    else:  # Triton 3.7 renamed it
        @gluon.jit
        def _sync():
            gl.barrier()

    @gluon.jit
    def _load_chunk(q_desc, k_desc, v_desc, row, col_q, col_v, bar, q_s, k_s, v_s, NBYTES: gl.constexpr):
        mbarrier.expect(bar, NBYTES)
        tma.async_copy_global_to_shared(q_desc, [row, col_q], bar, q_s)
        tma.async_copy_global_to_shared(k_desc, [row, col_q], bar, k_s)
        tma.async_copy_global_to_shared(v_desc, [row, col_v], bar, v_s)

    @gluon.jit
    def _sweep(q_desc, k_desc, v_desc, decay, enter, o_ptr, slot_start, slot_len, T, NSEG, SEG, scale,
               H: gl.constexpr, DK: gl.constexpr, DV: gl.constexpr, TV: gl.constexpr, C: gl.constexpr,
               STAGES: gl.constexpr, S_LAYOUT: gl.constexpr, VW_LAYOUT: gl.constexpr, VARLEN: gl.constexpr,
               REVERSE: gl.constexpr, STATE_T: gl.constexpr, num_warps: gl.constexpr):
        """``TV`` columns of o for one segment slot and head: ``_chunk_fwd``'s program (same grid, same
        results), q / k / v ``[rows, H * D]`` descriptors with ``[C, D]`` / ``[C, TV]`` boxes.

        The backward's sweeps are the same loop with other operands in the three roles (:func:`sweep_bwd`):
        ``STATE_T`` reads the state slice transposed (``enter[j, h]`` is ``[TV-tiled dim, DK]`` there),
        ``REVERSE`` visits the chunks last to first with the transposed decay matrix, weighs the state term by
        ``lambda^(L-1-r)`` and the update by ``scale lambda^(r+1)`` (the forward: the other way round)."""
        n_tiles: gl.constexpr = DV // TV
        pid = gl.program_id(0)
        h = gl.program_id(1)
        j = pid // n_tiles
        tile = pid % n_tiles
        if VARLEN:
            g0 = gl.load(slot_start + j)
            n = gl.load(slot_len + j)
        else:
            s = j % NSEG
            g0 = (j // NSEG) * T + s * SEG
            n = gl.minimum(SEG, T - s * SEG)
        n_chunks = gl.cdiv(n, C)
        col_q = h * DK
        col_v = h * DV + tile * TV
        dt: gl.constexpr = q_desc.dtype

        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                      instr_shape=[16, TV, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
        blk_k: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0])
        rows_l: gl.constexpr = gl.SliceLayout(1, mma)
        cols_l: gl.constexpr = gl.SliceLayout(0, mma)

        s2 = gl.load(decay + h) * LOG2E
        r = gl.arange(0, C, layout=rows_l)
        cc = gl.arange(0, C, layout=cols_l)
        if REVERSE:
            diff = cc[None, :] - r[:, None]
        else:
            diff = r[:, None] - cc[None, :]
        dmat = gl.where(diff >= 0, scale * gl.exp2(-diff.to(gl.float32) * s2), 0.0)
        qdec = scale * gl.exp2(-(r + 1).to(gl.float32) * s2)
        rb = gl.arange(0, C, layout=gl.SliceLayout(1, blk))
        cb = gl.arange(0, TV, layout=gl.SliceLayout(0, blk))
        rk = gl.arange(0, C, layout=gl.SliceLayout(1, blk_k))

        ik = gl.arange(0, DK, layout=rows_l)
        iv = gl.arange(0, TV, layout=cols_l)
        base = (j * H + h).to(gl.int64) * (DK * DV)
        if STATE_T:
            S = gl.load(enter + base + ik[:, None] + (tile * TV + iv)[None, :] * DK)
        else:
            S = gl.load(enter + base + ik[:, None] * DV + (tile * TV + iv)[None, :])

        q_s = gl.allocate_shared_memory(dt, [STAGES, C, DK], q_desc.layout)
        k_s = gl.allocate_shared_memory(dt, [STAGES, C, DK], k_desc.layout)
        v_s = gl.allocate_shared_memory(dt, [STAGES, C, TV], v_desc.layout)
        S_smem = gl.allocate_shared_memory(dt, [DK, TV], S_LAYOUT)
        vw_smem = gl.allocate_shared_memory(dt, [C, TV], VW_LAYOUT)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        NBYTES: gl.constexpr = (2 * C * DK + C * TV) * dt.primitive_bitwidth // 8
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
        for i in gl.static_range(STAGES):
            if i < n_chunks:
                if REVERSE:
                    first = g0 + (n_chunks - 1 - i) * C
                else:
                    first = g0 + i * C
                _load_chunk(q_desc, k_desc, v_desc, first, col_q, col_v, bars.index(i), q_s.index(i),
                            k_s.index(i), v_s.index(i), NBYTES)
        S_smem.store(S.to(dt))
        fence_async_shared()
        _sync()

        zero = gl.zeros([C, TV], gl.float32, layout=mma)
        for it in range(n_chunks):
            st = it % STAGES
            mbarrier.wait(bars.index(st), (it // STAGES) & 1)
            qs_ = q_s.index(st)
            ks_ = k_s.index(st)
            vs_ = v_s.index(st)
            if REVERSE:
                c = n_chunks - 1 - it
            else:
                c = it
            length = gl.minimum(n - c * C, C)
            if length < C:  # rows past the segment (another segment or sequence): zeros, as _chunk_fwd reads
                kk = ks_.load(blk_k)
                ks_.store(gl.where((rk < length)[:, None], kk, gl.zeros_like(kk)))
                vv = vs_.load(blk)
                vs_.store(gl.where((rb < length)[:, None], vv, gl.zeros_like(vv)))
                fence_async_shared()
                _sync()
            qk = warpgroup_mma(qs_, ks_.permute((1, 0)), zero, use_acc=False, is_async=True)
            qS = warpgroup_mma(qs_, S_smem, zero, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))
            p = gl.convert_layout((qk * dmat).to(dt), p_layout)
            qS = warpgroup_mma_wait(num_outstanding=0, deps=(qS, ))
            if REVERSE:  # the state term weighs rows by lambda^(L-1-r), the update by scale lambda^(r+1)
                w_out = gl.where(r < length, gl.exp2(-(length - 1 - r).to(gl.float32) * s2), 0.0)
                o = warpgroup_mma(p, vs_, qS * w_out[:, None], is_async=True)
                w = gl.where(rb < length, scale * gl.exp2(-(rb + 1).to(gl.float32) * s2), 0.0)
            else:
                o = warpgroup_mma(p, vs_, qS * qdec[:, None], is_async=True)
                w = gl.where(rb < length, gl.exp2(-(length - 1 - rb).to(gl.float32) * s2), 0.0)
            vw = vs_.load(blk).to(gl.float32) * w[:, None]
            vw_smem.store(vw.to(dt))
            fence_async_shared()
            _sync()
            S = warpgroup_mma(ks_.permute((1, 0)), vw_smem, S * gl.exp2(-length.to(gl.float32) * s2),
                              is_async=True)
            o = warpgroup_mma_wait(num_outstanding=1, deps=(o, ))
            rows = (g0 + c * C + rb).to(gl.int64)
            gl.store(o_ptr + rows[:, None] * (H * DV) + col_v + cb[None, :], gl.convert_layout(o.to(dt), blk),
                     mask=(rb < length)[:, None] & (cb < TV)[None, :])
            S = warpgroup_mma_wait(num_outstanding=0, deps=(S, ))
            S_smem.store(S.to(dt))
            fence_async_shared()
            _sync()
            if it + STAGES < n_chunks:
                if REVERSE:
                    nxt = g0 + (n_chunks - 1 - it - STAGES) * C
                else:
                    nxt = g0 + (it + STAGES) * C
                _load_chunk(q_desc, k_desc, v_desc, nxt, col_q, col_v, bars.index(st), qs_, ks_, vs_, NBYTES)
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))


def ready(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, state_tile: int) -> bool:
    """Whether :func:`sweep` can take this forward: Gluon importable, :data:`ENABLED`, not the interpreter, at
    least :data:`MIN_TOKEN_HEADS`, 16-bit contiguous 16-byte aligned CUDA tensors on a compute capability 9.x
    GPU (``wgmma``), ``Dk = 128``, ``Dv`` a multiple of 64, and the chunk and state tile it was written for."""
    if gluon is None or not ENABLED or interpreting() or not q.is_cuda:
        return False
    if q.shape[0] * q.shape[1] * q.shape[2] < MIN_TOKEN_HEADS:
        return False
    if q.dtype not in (torch.bfloat16, torch.float16) or (chunk, state_tile) != (CHUNK, TILE):
        return False
    if q.shape[-1] != 128 or v.shape[-1] % TILE:
        return False
    return tma_ready(q, k, v) and torch.cuda.get_device_capability(q.device)[0] == 9


def _launch(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, decay: torch.Tensor, state: torch.Tensor, layout,
            scale: float, reverse: bool, state_t: bool) -> torch.Tensor:
    """The sweep with ``a`` / ``b`` ``[B, T, H, Da]`` in the roles of q / k and ``c`` ``[B, T, H, Dc]`` in the
    role of v (its columns tiled by :data:`TILE`); returns the ``[B, T, H, Dc]`` output."""
    if TRANSPOSED:
        from mixarch.kernels.triton.lightning import gluon_sweep_t

        return gluon_sweep_t.launch(a, b, c, decay, state, layout, scale, reverse, state_t)
    bs, t, h, da = a.shape
    dc = c.shape[-1]
    dt = gl.bfloat16 if a.dtype == torch.bfloat16 else gl.float16
    box_ab = gl.NVMMASharedLayout.get_default_for([CHUNK, da], dt)
    box_c = gl.NVMMASharedLayout.get_default_for([CHUNK, TILE], dt)
    descs = [TensorDescriptor(x2, list(x2.shape), list(x2.stride()), box, lay)
             for x2, box, lay in ((a.view(bs * t, h * da), [CHUNK, da], box_ab),
                                  (b.view(bs * t, h * da), [CHUNK, da], box_ab),
                                  (c.view(bs * t, h * dc), [CHUNK, TILE], box_c))]
    out = torch.empty(bs, t, h, dc, dtype=a.dtype, device=a.device)
    _sweep[((dc // TILE) * layout.n_slots, h)](
        *descs, decay, state, out, layout.slot_start, layout.slot_len, t, layout.n_seg, layout.segment, scale,
        H=h, DK=da, DV=dc, TV=TILE, C=CHUNK, STAGES=STAGES,
        S_LAYOUT=gl.NVMMASharedLayout.get_default_for([da, TILE], dt), VW_LAYOUT=box_c,
        VARLEN=layout.varlen, REVERSE=reverse, STATE_T=state_t, num_warps=4)
    return out


def sweep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor, layout,
          scale: float) -> torch.Tensor:
    """o ``[B, T, H, Dv]`` from the states entering each segment slot ``enter`` ``[n_slots, H, Dk, Dv]`` (fp32),
    for the segment ``layout`` of :func:`~.chunk.make_layout`; q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``."""
    return _launch(q, k, v, decay, enter, layout, scale, reverse=False, state_t=False)


def sweep_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor,
              arrive: torch.Tensor, do: torch.Tensor, layout, scale: float):
    """dq, dk, dv of :func:`~.chunk._chunk_bwd_dq` / ``_dk`` / ``_dv`` (``Dk = Dv``): dq sweeps forward with
    (do, v, k) in the roles of (q, k, v) and the entering states transposed; dk and dv sweep backward from the
    state gradients ``arrive`` with (v, do, q), transposed, and (k, q, do)."""
    dq = _launch(do, v, k, decay, enter, layout, scale, reverse=False, state_t=True)
    dk = _launch(v, do, q, decay, arrive, layout, scale, reverse=True, state_t=True)
    dv = _launch(k, q, do, decay, arrive, layout, scale, reverse=True, state_t=False)
    return dq, dk, dv


def _compiled_or_none(fn, *args):
    """``fn(*args)``, or None where the installed Triton's Gluon cannot compile the kernel (Gluon is experimental
    and changes between releases): then a warning says so, :data:`ENABLED` turns off and the caller runs the
    Triton kernels."""
    global ENABLED
    try:
        return fn(*args)
    except CompilationError as err:
        ENABLED = False
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"mixarch: the Gluon Lightning sweep does not compile with Triton {triton.__version__} "
                      f"({message}); the Triton sweep runs instead", RuntimeWarning, stacklevel=3)
        return None


def try_sweep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor, layout,
              scale: float) -> torch.Tensor | None:
    """:func:`sweep`, or None (after a warning) where Gluon cannot compile it: the caller runs ``_chunk_fwd``."""
    return _compiled_or_none(sweep, q, k, v, decay, enter, layout, scale)


def try_sweep_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor,
                  arrive: torch.Tensor, do: torch.Tensor, layout, scale: float):
    """:func:`sweep_bwd`, or None (after a warning) where Gluon cannot compile it: the caller runs the Triton
    backward kernels."""
    return _compiled_or_none(sweep_bwd, q, k, v, decay, enter, arrive, do, layout, scale)
