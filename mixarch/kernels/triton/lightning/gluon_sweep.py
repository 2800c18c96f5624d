"""The Lightning chunk sweeps in Gluon, for Hopper GPUs: :func:`~.chunk._chunk_fwd` with a chunk's independent
matmuls in flight together, and the backward's dq, dk, dv sweeps by the same kernel with roles swapped.

Triton's ``tl.dot`` waits on each ``wgmma`` as soon as it is issued, so ``_chunk_fwd``'s four matmuls per chunk
run one after another; and since ``q S`` takes the state ``S`` ``[Dk, TV]`` as its B operand, which ``wgmma``
reads from shared memory, every chunk's state update goes through a shared-memory copy and a barrier before the
next chunk can use it. This kernel computes the same products from the same tiles with the state kept transposed,
``U = S^T`` ``[TV, Dk]``, as the A operand in registers. Per chunk:

1. ``P = (q k^T) * D`` and ``X = U q^T`` (``= (q S)^T``) are issued; P goes to shared memory.
2. The state update ``U = lambda^L U + (w v)^T k`` (``(w v)^T``: v's tile loaded transposed and weighed in
   registers) and ``o^T = v^T P^T + X * scale lambda^(r+1)`` are issued together.
3. o^T goes out through shared memory and a TMA store (a masked store for a segment's partial last chunk).

(:data:`WIDE` gives a program two warpgroups over 128 state columns.)

Tiles of q, k and v arrive by TMA two chunks ahead. On an H200 at T = 128K (B = 1, 32 heads of 128, bf16) the sweep
takes ~1.2 ms against ~1.6 ms for ``_chunk_fwd`` (docs/benchmarks.md; 1.25-1.3 ms with the state in shared
memory, the kernel before 2026-11-28 05:00), and the outputs are bit-identical to ``_chunk_fwd``'s.

The backward's three sweeps have the forward's shape (:func:`sweep_bwd`): dq sweeps forward with (do, v, k) in the
roles of (q, k, v) from the entering states read transposed (``STATE_T``); dk and dv sweep the chunks last to first
(``REVERSE``: transposed decay matrix, the row weights of q and k swapped) from the state gradients, with (v, do, q)
and (k, q, do). They give ``_chunk_bwd_dq`` / ``_dk`` / ``_dv``'s results bit for bit, ~4.3 against 5.3 ms for
the backward at 128K on an H200.

Gluon kernels have no interpreter, so this path is for direct launches on compute capability 9.x only. It covers
16-bit inputs, ``Dk = 128``, ``Dv`` a multiple of 64 and 64-token chunks, and only long inputs
(:data:`MIN_TOKEN_HEADS`: its launch costs more host time than a Triton launch). Every other call, and every
traced one, takes ``_chunk_fwd``.
"""

from __future__ import annotations

import functools
import warnings

import torch
import triton
from triton.compiler.errors import CompilationError

from mixarch.kernels.triton import bind_context, interpreting, tma_ready

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
#: one program of two warpgroups per (segment slot, head) over 128 state columns, 64 per warpgroup, instead of two
#: programs of one (``Dv`` a multiple of 128): the halves share each chunk's q and k tiles in shared memory and
#: split ``q k^T`` by keys (12 instead of 14 units of matmul per chunk). 255 registers, no spills, 131 KB of
#: shared memory at two stages (:data:`WIDE_STAGES`), one program per multiprocessor. Bit-identical to one
#: warpgroup, and no faster: three same-process runs on H200s (2026-11-28) put the forward at 128K within
#: -2% .. +2% of one warpgroup's (docs/benchmarks.md). Off.
WIDE, WIDE_STAGES = False, 2

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
    def _program(slot_start, slot_len, T, NSEG, SEG, N_TILES: gl.constexpr, VARLEN: gl.constexpr):
        """This program's segment slot ``j``, head, column tile and the slot's first token and length (the
        grid of :func:`~.chunk._program`: ``N_TILES`` neighbouring programs per slot, heads on axis 1)."""
        pid = gl.program_id(0)
        j = pid // N_TILES
        if VARLEN:
            g0 = gl.load(slot_start + j)
            n = gl.load(slot_len + j)
        else:
            s = j % NSEG
            g0 = (j // NSEG) * T + s * SEG
            n = gl.minimum(SEG, T - s * SEG)
        return j, gl.program_id(1), pid % N_TILES, g0, n

    @gluon.jit
    def _load_chunk(q_desc, k_desc, v_desc, row, col_q, col_v, bar, q_s, k_s, v_s, NBYTES: gl.constexpr):
        mbarrier.expect(bar, NBYTES)
        tma.async_copy_global_to_shared(q_desc, [row, col_q], bar, q_s)
        tma.async_copy_global_to_shared(k_desc, [row, col_q], bar, k_s)
        tma.async_copy_global_to_shared(v_desc, [row, col_v], bar, v_s)

    @gluon.jit
    def _update_operand(vs_, ta, cc, length, s2, scale, qdec, a_u: gl.constexpr, dt: gl.constexpr,
                        REVERSE: gl.constexpr):
        """``(w v)^T`` (the state update's A operand: the chunk's v tile transposed, token columns weighed) and
        the row weights of the state term of o, for a chunk of ``length`` tokens."""
        if REVERSE:  # the update weighs rows by scale lambda^(r+1), the state term by lambda^(L-1-r)
            w = gl.where(ta < length, scale * gl.exp2(-(ta + 1).to(gl.float32) * s2), 0.0)
            w_out = gl.where(cc < length, gl.exp2(-(length - 1 - cc).to(gl.float32) * s2), 0.0)
        else:
            w = gl.where(ta < length, gl.exp2(-(length - 1 - ta).to(gl.float32) * s2), 0.0)
            w_out = qdec
        return (vs_.permute((1, 0)).load(a_u).to(gl.float32) * w[None, :]).to(dt), w_out

    @gluon.jit
    def _sweep(q_desc, k_desc, v_desc, o_desc, decay, enter, o_ptr, slot_start, slot_len, T, NSEG, SEG, scale,
               H: gl.constexpr, DK: gl.constexpr, DV: gl.constexpr, TV: gl.constexpr, C: gl.constexpr,
               STAGES: gl.constexpr, P_LAYOUT: gl.constexpr, VARLEN: gl.constexpr, REVERSE: gl.constexpr,
               STATE_T: gl.constexpr, num_warps: gl.constexpr):
        """``TV`` columns of o for one segment slot and head: ``_chunk_fwd``'s program (same grid, same
        results), q / k / v / o ``[rows, H * D]`` descriptors with ``[C, DK]`` / ``[C, TV]`` boxes.

        The backward's sweeps are the same loop with other operands in the three roles (:func:`sweep_bwd`):
        ``STATE_T`` reads the state slice transposed (``enter[j, h]`` is ``[TV-tiled dim, DK]`` there),
        ``REVERSE`` visits the chunks last to first with the transposed decay matrix, weighs the state term by
        ``lambda^(L-1-r)`` and the update by ``scale lambda^(r+1)`` (the forward: the other way round)."""
        j, h, tile, g0, n = _program(slot_start, slot_len, T, NSEG, SEG, DV // TV, VARLEN)
        n_chunks = gl.cdiv(n, C)
        col_q = h * DK
        col_v = h * DV + tile * TV
        dt: gl.constexpr = q_desc.dtype

        mma_c: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, C, 16])  # X, o^T [TV, C]
        # P [C, C]: with two warpgroups (TV = 128, 8 warps) each computes half of P's key columns
        WG: gl.constexpr = num_warps // 4
        mma_p: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WG],
                                                        instr_shape=[16, C // WG, 16])
        mma_u: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, DK, 16])  # U [TV, DK]
        a_c: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_c, k_width=2)  # U as A of X
        a_u: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_u, k_width=2)  # (w v)^T as A of U
        blk_k: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0])
        blk_v: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
        blk_t: gl.constexpr = gl.BlockedLayout([8, 1], [8, 4], [1, num_warps], [0, 1])  # o^T, v contiguous

        s2 = gl.load(decay + h) * LOG2E
        r = gl.arange(0, C, layout=gl.SliceLayout(1, mma_p))  # query rows of P
        cp = gl.arange(0, C, layout=gl.SliceLayout(0, mma_p))  # key columns of P
        cc = gl.arange(0, C, layout=gl.SliceLayout(0, mma_c))  # query columns of X, o^T
        if REVERSE:
            diff = cp[None, :] - r[:, None]
        else:
            diff = r[:, None] - cp[None, :]
        dmat = gl.where(diff >= 0, scale * gl.exp2(-diff.to(gl.float32) * s2), 0.0)
        qdec = scale * gl.exp2(-(cc + 1).to(gl.float32) * s2)
        ta = gl.arange(0, C, layout=gl.SliceLayout(0, a_u))  # token columns of (w v)^T
        rk = gl.arange(0, C, layout=gl.SliceLayout(1, blk_k))
        rv = gl.arange(0, C, layout=gl.SliceLayout(1, blk_v))
        it_v = gl.arange(0, TV, layout=gl.SliceLayout(1, blk_t))
        it_t = gl.arange(0, C, layout=gl.SliceLayout(0, blk_t))

        iv = gl.arange(0, TV, layout=gl.SliceLayout(1, mma_u))
        ik = gl.arange(0, DK, layout=gl.SliceLayout(0, mma_u))
        base = (j * H + h).to(gl.int64) * (DK * DV)
        if STATE_T:  # U = S^T, for a state stored [DK, DV] (or [DV, DK]: STATE_T)
            U = gl.load(enter + base + ik[None, :] + (tile * TV + iv)[:, None] * DK)
        else:
            U = gl.load(enter + base + ik[None, :] * DV + (tile * TV + iv)[:, None])

        q_s = gl.allocate_shared_memory(dt, [STAGES, C, DK], q_desc.layout)
        k_s = gl.allocate_shared_memory(dt, [STAGES, C, DK], k_desc.layout)
        v_s = gl.allocate_shared_memory(dt, [STAGES, C, TV], v_desc.layout)
        p_s = gl.allocate_shared_memory(dt, [C, C], P_LAYOUT)
        o_s = gl.allocate_shared_memory(dt, [C, TV], o_desc.layout)
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

        zero_p = gl.zeros([C, C], gl.float32, layout=mma_p)
        zero_x = gl.zeros([TV, C], gl.float32, layout=mma_c)
        u_a = gl.convert_layout(U.to(dt), a_c)
        for it in range(n_chunks):
            st = it % STAGES
            mbarrier.wait(bars.index(st), (it // STAGES) & 1)
            if REVERSE:
                c = n_chunks - 1 - it
            else:
                c = it
            qs_ = q_s.index(st)
            ks_ = k_s.index(st)
            vs_ = v_s.index(st)
            length = gl.minimum(n - c * C, C)
            if length < C:  # rows past the segment (another segment or sequence): zeros, as _chunk_fwd reads
                kk = ks_.load(blk_k)
                ks_.store(gl.where((rk < length)[:, None], kk, gl.zeros_like(kk)))
                vv = vs_.load(blk_v)
                vs_.store(gl.where((rv < length)[:, None], vv, gl.zeros_like(vv)))
                fence_async_shared()
                _sync()
            qk = warpgroup_mma(qs_, ks_.permute((1, 0)), zero_p, use_acc=False, is_async=True)
            X = warpgroup_mma(u_a, qs_.permute((1, 0)), zero_x, use_acc=False, is_async=True)
            vw_t, w_out = _update_operand(vs_, ta, cc, length, s2, scale, qdec, a_u, dt, REVERSE)
            qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))
            p_s.store((qk * dmat).to(dt))
            U = warpgroup_mma(vw_t, ks_, U * gl.exp2(-length.to(gl.float32) * s2), is_async=True)
            fence_async_shared()
            _sync()
            X = warpgroup_mma_wait(num_outstanding=1, deps=(X, ))
            o_t = warpgroup_mma(vs_.permute((1, 0)), p_s.permute((1, 0)), X * w_out[None, :], is_async=True)
            U = warpgroup_mma_wait(num_outstanding=1, deps=(U, ))
            # the next chunk's A operand, made here: converted after the next chunk's first matmul is issued,
            # ptxas would make that matmul finish first (it cannot tell that U's own matmul is done)
            u_a = gl.convert_layout(U.to(dt), a_c)
            o_t = warpgroup_mma_wait(num_outstanding=0, deps=(o_t, ))
            row = g0 + c * C
            if length == C:
                tma.store_wait(0)  # the previous chunk's o tile has left o_s
                o_s.permute((1, 0)).store(o_t.to(dt))
                fence_async_shared()
                _sync()
                tma.async_copy_shared_to_global(o_desc, [row, col_v], o_s)
            else:
                rows = (row + it_t).to(gl.int64)
                gl.store(o_ptr + rows[None, :] * (H * DV) + col_v + it_v[:, None],
                         gl.convert_layout(o_t.to(dt), blk_t), mask=(it_t < length)[None, :])
            if it + STAGES < n_chunks:
                if REVERSE:
                    nxt = g0 + (n_chunks - 1 - it - STAGES) * C
                else:
                    nxt = g0 + (it + STAGES) * C
                _load_chunk(q_desc, k_desc, v_desc, nxt, col_q, col_v, bars.index(st), qs_, ks_, vs_, NBYTES)
        tma.store_wait(0)
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))


@functools.cache
def smem_layout(rows: int, cols: int, dtype: torch.dtype):
    """The default shared-memory (NVMMA) layout of a ``[rows, cols]`` 16-bit tile, built once: layouts are
    per-launch constexprs, and building them costs host time on every call."""
    return gl.NVMMASharedLayout.get_default_for([rows, cols], gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


@functools.cache
def _capability_major(device_index: int) -> int:
    return torch.cuda.get_device_capability(device_index)[0]


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
    index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    return tma_ready(q, k, v) and _capability_major(index) == 9


def _launch(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, decay: torch.Tensor, state: torch.Tensor, layout,
            scale: float, reverse: bool, state_t: bool) -> torch.Tensor:
    """The sweep with ``a`` / ``b`` ``[B, T, H, Da]`` in the roles of q / k and ``c`` ``[B, T, H, Dc]`` in the
    role of v (its columns tiled by :data:`TILE`); returns the ``[B, T, H, Dc]`` output."""
    bs, t, h, da = a.shape
    dc = c.shape[-1]
    wg = 2 if WIDE and dc % (2 * TILE) == 0 else 1  # warpgroups per program, TILE state columns each
    tv = wg * TILE
    box_ab, box_c = smem_layout(CHUNK, da, a.dtype), smem_layout(CHUNK, tv, a.dtype)
    out = torch.empty(bs, t, h, dc, dtype=a.dtype, device=a.device)
    descs = [TensorDescriptor(x2, list(x2.shape), list(x2.stride()), box, lay)
             for x2, box, lay in ((a.view(bs * t, h * da), [CHUNK, da], box_ab),
                                  (b.view(bs * t, h * da), [CHUNK, da], box_ab),
                                  (c.view(bs * t, h * dc), [CHUNK, tv], box_c),
                                  (out.view(bs * t, h * dc), [CHUNK, tv], box_c))]
    _sweep[((dc // tv) * layout.n_slots, h)](
        *descs, decay, state, out, layout.slot_start, layout.slot_len, t, layout.n_seg, layout.segment, scale,
        H=h, DK=da, DV=dc, TV=tv, C=CHUNK, STAGES=WIDE_STAGES if wg == 2 else STAGES,
        P_LAYOUT=smem_layout(CHUNK, CHUNK, a.dtype), VARLEN=layout.varlen,
        REVERSE=reverse, STATE_T=state_t, num_warps=4 * wg)
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
    bind_context(args[0].device)
    try:
        return fn(*args)
    except CompilationError as err:
        ENABLED = False
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"mixarch: a Gluon Lightning kernel does not compile with Triton {triton.__version__} "
                      f"({message}); the Triton kernels run instead", RuntimeWarning, stacklevel=3)
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
