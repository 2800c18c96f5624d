"""The Lightning forward's chunk sweep in Gluon with the state kept transposed in registers (experimental).

:mod:`.gluon_sweep` keeps the state slice ``S`` ``[Dk, TV]`` as the ``wgmma`` accumulator and copies it to shared
memory every chunk, since ``q S`` needs it as the B operand: a store, a fence and a barrier on the chain from one
chunk's state update to the next chunk's ``q S``. This kernel keeps ``U = S^T`` ``[TV, Dk]`` instead, so that the
state is the A operand, read from registers:

1. ``P = (q k^T) * D`` and ``X = U q^T`` (``= (q S)^T``) are issued together; P goes to shared memory.
2. The state update ``U = lambda^L U + (w v)^T k`` takes ``(w v)^T`` from registers (v's tile loaded transposed
   and weighed there) and k from shared memory; beside it ``o^T = v^T P^T + X * scale lambda^(r+1)``.
3. o^T is written through shared memory and a TMA store (a masked store for a segment's partial last chunk).

Same grid, tiles and products as :func:`~.chunk._chunk_fwd`.
"""

from __future__ import annotations

import torch

from mixarch.kernels.triton.lightning import gluon_sweep
from mixarch.kernels.triton.lightning.gluon_sweep import gluon

if gluon is not None:
    from mixarch.kernels.triton.lightning.gluon_sweep import (
        LOG2E,
        TensorDescriptor,
        _load_chunk,
        _sync,
        fence_async_shared,
        gl,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

CHUNK, TILE, STAGES = gluon_sweep.CHUNK, gluon_sweep.TILE, gluon_sweep.STAGES
#: under measurement: issue ``U q^T`` before ``q k^T`` (and wait on both)
X_FIRST = False

if gluon is not None:

    @gluon.jit
    def _sweep_t(q_desc, k_desc, v_desc, o_desc, decay, enter, o_ptr, slot_start, slot_len, T, NSEG, SEG, scale,
                 H: gl.constexpr, DK: gl.constexpr, DV: gl.constexpr, TV: gl.constexpr, C: gl.constexpr,
                 STAGES: gl.constexpr, P_LAYOUT: gl.constexpr, VARLEN: gl.constexpr, REVERSE: gl.constexpr,
                 STATE_T: gl.constexpr, X_FIRST: gl.constexpr, num_warps: gl.constexpr):
        """``TV`` columns of o for one segment slot and head (``_chunk_fwd``'s program), q / k / v / o
        ``[rows, H * D]`` descriptors with ``[C, DK]`` / ``[C, TV]`` boxes. ``REVERSE`` and ``STATE_T`` as in
        :func:`.gluon_sweep._sweep` (the backward's sweeps)."""
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

        mma_c: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, C, 16])  # [C, C], [TV, C]
        mma_u: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, DK, 16])  # U [TV, DK]
        a_c: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_c, k_width=2)  # U as A of X
        a_u: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_u, k_width=2)  # (w v)^T as A of U
        blk_k: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0])
        blk_v: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
        blk_t: gl.constexpr = gl.BlockedLayout([8, 1], [8, 4], [1, num_warps], [0, 1])  # o^T, v contiguous

        s2 = gl.load(decay + h) * LOG2E
        r = gl.arange(0, C, layout=gl.SliceLayout(1, mma_c))  # query rows of P
        cc = gl.arange(0, C, layout=gl.SliceLayout(0, mma_c))  # key columns of P; query columns of X, o^T
        if REVERSE:
            diff = cc[None, :] - r[:, None]
        else:
            diff = r[:, None] - cc[None, :]
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

        zero = gl.zeros([C, C], gl.float32, layout=mma_c)
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
            if X_FIRST:
                X = warpgroup_mma(u_a, qs_.permute((1, 0)), zero, use_acc=False, is_async=True)
                qk = warpgroup_mma(qs_, ks_.permute((1, 0)), zero, use_acc=False, is_async=True)
            else:
                qk = warpgroup_mma(qs_, ks_.permute((1, 0)), zero, use_acc=False, is_async=True)
                X = warpgroup_mma(u_a, qs_.permute((1, 0)), zero, use_acc=False, is_async=True)
            if REVERSE:  # the update weighs rows by scale lambda^(r+1), the state term by lambda^(L-1-r)
                w = gl.where(ta < length, scale * gl.exp2(-(ta + 1).to(gl.float32) * s2), 0.0)
                w_out = gl.where(cc < length, gl.exp2(-(length - 1 - cc).to(gl.float32) * s2), 0.0)
            else:
                w = gl.where(ta < length, gl.exp2(-(length - 1 - ta).to(gl.float32) * s2), 0.0)
                w_out = qdec
            vw_t = (vs_.permute((1, 0)).load(a_u).to(gl.float32) * w[None, :]).to(dt)
            if X_FIRST:
                qk, X = warpgroup_mma_wait(num_outstanding=0, deps=(qk, X))
            else:
                qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))
            p_s.store((qk * dmat).to(dt))
            U = warpgroup_mma(vw_t, ks_, U * gl.exp2(-length.to(gl.float32) * s2), is_async=True)
            fence_async_shared()
            _sync()
            if not X_FIRST:
                X = warpgroup_mma_wait(num_outstanding=1, deps=(X, ))
            o_t = warpgroup_mma(vs_.permute((1, 0)), p_s.permute((1, 0)), X * w_out[None, :], is_async=True)
            U = warpgroup_mma_wait(num_outstanding=1, deps=(U, ))
            # the next chunk's A operand, made here: converted after the next q k^T is issued, ptxas would make
            # that matmul finish first (it cannot tell that U's own matmul is done)
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


def launch(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, decay: torch.Tensor, state: torch.Tensor, layout,
           scale: float, reverse: bool, state_t: bool) -> torch.Tensor:
    """:func:`.gluon_sweep._launch` by :func:`_sweep_t`: ``a`` / ``b`` ``[B, T, H, Da]`` in the roles of q / k,
    ``c`` ``[B, T, H, Dc]`` in the role of v; returns the ``[B, T, H, Dc]`` output."""
    bs, t, h, da = a.shape
    dc = c.shape[-1]
    dt = gl.bfloat16 if a.dtype == torch.bfloat16 else gl.float16
    box_ab = gl.NVMMASharedLayout.get_default_for([CHUNK, da], dt)
    box_c = gl.NVMMASharedLayout.get_default_for([CHUNK, TILE], dt)
    out = torch.empty(bs, t, h, dc, dtype=a.dtype, device=a.device)
    descs = [TensorDescriptor(x2, list(x2.shape), list(x2.stride()), box, lay)
             for x2, box, lay in ((a.view(bs * t, h * da), [CHUNK, da], box_ab),
                                  (b.view(bs * t, h * da), [CHUNK, da], box_ab),
                                  (c.view(bs * t, h * dc), [CHUNK, TILE], box_c),
                                  (out.view(bs * t, h * dc), [CHUNK, TILE], box_c))]
    _sweep_t[((dc // TILE) * layout.n_slots, h)](
        *descs, decay, state, out, layout.slot_start, layout.slot_len, t, layout.n_seg, layout.segment, scale,
        H=h, DK=da, DV=dc, TV=TILE, C=CHUNK, STAGES=STAGES,
        P_LAYOUT=gl.NVMMASharedLayout.get_default_for([CHUNK, CHUNK], dt), VARLEN=layout.varlen,
        REVERSE=reverse, STATE_T=state_t, X_FIRST=X_FIRST, num_warps=4)
    return out


def sweep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor, layout,
          scale: float) -> torch.Tensor:
    """:func:`.gluon_sweep.sweep`'s result (o ``[B, T, H, Dv]``) by :func:`_sweep_t`."""
    return launch(q, k, v, decay, enter, layout, scale, reverse=False, state_t=False)
