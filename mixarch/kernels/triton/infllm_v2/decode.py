"""InfLLM-V2 decode in Triton: stage 1, a top-k by rank counting, stage 2 (backend ``triton`` of
``infllm_v2_decode``).

Same result as :func:`mixarch.ops.infllm_v2.attention.reference_infllm_v2_decode` (the selection of
:mod:`mixarch.kernels.triton.infllm_v2.select`, then stage 2 over the selected blocks) for one query per sequence,
returning the selection as a mask rather than ascending index rows. That freedom is what this op is for: the
selection op's top-k (one program per (sequence, KV head) searching the ``k``-th largest of ~2048 block scores
by bisection, a serial chain of block-wide reductions: ~9 us of a ~32 us step at 128K on an H200) must sort its
output; here the selected blocks go to stage 2 in rank order, which lets many programs share the top-k:

1. ``_lse_kernel`` and ``_score_kernel`` of the selection module: the block scores ``[B*Hkv, 1, nb]``.
2. ``_rank_topk_kernel``: ``NBP / OWN`` programs per (sequence, KV head), each ranking :data:`OWN` blocks against
   every candidate (forcing and order-preserving keys as the top-k kernel): ``rank(i) = #{j: key_j > key_i} +
   #{j > i: key_j == key_i}`` (ties: the larger block index wins, as there). Block ``i`` is selected iff
   ``rank(i) < min(b_t + 1, topk)``, the top-k kernel's blocks exactly, and goes to slot ``rank(i)``.
3. stage 2's split decode forward and merge (``_fwd_kernel``, ``_combine_kernel`` of the sparse module) over the
   rank-ordered rows, the forced blocks among them gathered like the others.

Five launches, as select + sparse attention, with the top-k's serial search replaced by ``OWN * NBP``
comparisons per program. Measured on an H200 at 128K, as CUDA-graph replays: 32.5 -> 30.2-30.4 us a decode step
(bench/decode_rank_ab.py), 30.0 -> 29.6 us on bench/infllm_v2.py's inputs, whose bisection stops early (the
search's length depends on the scores; the rank count's does not). Traced calls go through the custom op
(per-thread loads, no programmatic dependent launch).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from mixarch.kernels.triton import cdiv, eager, launcher, pow2
from mixarch.kernels.triton.infllm_v2.common import launch
from mixarch.kernels.triton.infllm_v2.select import _order_key, block_scores
from mixarch.kernels.triton.infllm_v2.sparse import _sparse_fwd
from mixarch.kernels.triton.pdl import pdl_enabled, pdl_handoff

#: candidate blocks ranked by one program of :func:`_rank_topk_kernel` (``NBP / OWN`` programs per sequence and KV
#: head). bench/decode_rank_ab.py, H200: a 128K decode step 30.4-30.5 us with 4, 31.0-31.2 with 8, 31.9-32.1
#: with 2 (16K: 21.8-22.2 us for 2, 4 and 8)
OWN = 4


@triton.jit
def _rank_topk_kernel(s_ptr, out_ptr, mask_ptr, T_K, NB, INIT, LOCAL, BS: tl.constexpr, TOPK: tl.constexpr,
                      TOPKP: tl.constexpr, NBP: tl.constexpr, J: tl.constexpr, PDL: tl.constexpr):
    """Forcing + top-``TOPK`` of the block scores of row ``program_id(1)`` (one query at position ``T_K - 1``) by
    rank counting: program ``p`` of ``P`` ranks the blocks ``p + P * j`` (``j < J``) against every candidate.
    Selected block ``b`` of rank ``r`` goes to ``out[row, r]`` (rank order), slots from ``min(b_t + 1, TOPK)``
    on are ``-1``; ``mask[row, b]`` flags every block."""
    if PDL:
        pdl_handoff()
    i_p, i_bh = tl.program_id(0), tl.program_id(1)
    bt = (T_K - 1) // BS
    blk = tl.arange(0, NBP)
    cand = blk <= bt
    x = tl.load(s_ptr + i_bh.to(tl.int64) * NB + blk, mask=cand, other=float("-inf"))
    forced = (blk < INIT) | ((blk >= bt - LOCAL) & cand)
    key = tl.where(cand, _order_key(tl.where(forced, float("inf"), x)), -2147483648)
    own = i_p + tl.num_programs(0) * tl.arange(0, J)
    own_cand = own <= bt
    xo = tl.load(s_ptr + i_bh.to(tl.int64) * NB + own, mask=own_cand, other=float("-inf"))
    own_forced = (own < INIT) | ((own >= bt - LOCAL) & own_cand)
    own_key = tl.where(own_cand, _order_key(tl.where(own_forced, float("inf"), xo)), -2147483648)
    # rank: the candidates that beat the block (a larger key, or an equal key and a larger index)
    beats = (key[None, :] > own_key[:, None]) | ((key[None, :] == own_key[:, None]) & (blk[None, :] > own[:, None]))
    rank = tl.sum(beats.to(tl.int32), 1)
    k_eff = tl.minimum(bt + 1, TOPK)
    sel = own_cand & (rank < k_eff)
    tl.store(mask_ptr + i_bh.to(tl.int64) * NB + own, sel, mask=own < NB)
    row = out_ptr + i_bh.to(tl.int64) * TOPK
    tl.store(row + rank, own.to(tl.int64), mask=sel)
    if i_p == 0:
        cols = tl.arange(0, TOPKP)
        tl.store(row + cols, tl.full([TOPKP], -1, tl.int64), mask=(cols >= k_eff) & (cols < TOPK))


@triton_op("mixarch::infllm_v2_decode_triton", mutates_args=())
def infllm_v2_decode_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compressed_k: torch.Tensor,
                        compressed_k2: torch.Tensor | None, block_size: int, kernel_size: int, kernel_stride: int,
                        init_blocks: int, local_blocks: int, topk: int, scale: float,
                        exact_normalizer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Custom-op form of :func:`triton_infllm_v2_decode` (positional arguments)."""
    return _decode(q, k, v, compressed_k, compressed_k2, block_size, kernel_size, kernel_stride, init_blocks,
                   local_blocks, topk, scale, exact_normalizer, direct=False)


def _decode(q, k, v, compressed_k, compressed_k2, block_size, kernel_size, kernel_stride, init_blocks,
            local_blocks, topk, scale, exact_normalizer, *, direct: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The launches of the module doc: ``(o [B, 1, Hq, Dv], selected [B, Hkv, 1, nb] bool)``."""
    if q.shape[0] == 0:
        return select_attend(q.new_empty((0, 1, cdiv(k.shape[1], block_size)), dtype=torch.float32), q, k, v,
                             block_size, init_blocks, local_blocks, topk, scale, direct=direct)
    scores = block_scores(q, compressed_k, compressed_k2, k.shape[1], block_size, kernel_size, kernel_stride, scale,
                          exact_normalizer, direct=direct)
    return select_attend(scores, q, k, v, block_size, init_blocks, local_blocks, topk, scale, direct=direct)


def select_attend(scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int,
                  init_blocks: int, local_blocks: int, topk: int, scale: float, *,
                  direct: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches 2 and 3 of the module doc: from the unforced block scores ``[B*Hkv, 1, nb]`` (fp32, as
    :func:`~mixarch.kernels.triton.infllm_v2.select.block_scores` writes them) of the queries ``q``
    ``[B, 1, Hq, D]`` at the last of ``Tk`` positions, ``(o [B, 1, Hq, Dv], selected [B, Hkv, 1, nb] bool)``."""
    b, hkv, t_k = q.shape[0], k.shape[2], k.shape[1]
    nb = scores.shape[-1]
    nbp = pow2(nb)
    own = min(OWN, nbp)
    selected = torch.empty((b, hkv, 1, nb), dtype=torch.bool, device=q.device)
    if b == 0:
        return q.new_empty((0, 1, q.shape[2], v.shape[-1])), selected
    idx = torch.empty((b, hkv, 1, topk), dtype=torch.int64, device=q.device)
    launcher(_rank_topk_kernel, direct)[(nbp // own, b * hkv)](
        scores, idx, selected, t_k, nb, init_blocks, local_blocks, BS=block_size, TOPK=topk, TOPKP=pow2(topk),
        NBP=nbp, J=own, **launch(4, 1, pdl=pdl_enabled(q.device, direct)))
    return _sparse_fwd(q, k, v, idx, block_size, scale, 0, -1, direct=direct)[0], selected


def triton_infllm_v2_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compressed_k: torch.Tensor,
                            compressed_k2: torch.Tensor | None, *, block_size: int, kernel_size: int,
                            kernel_stride: int, init_blocks: int, local_blocks: int, topk: int, scale: float,
                            exact_normalizer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``infllm_v2_decode``: ``(o [B, 1, Hq, Dv], selected [B, Hkv, 1, nb] bool)`` for one query per
    sequence (the last of ``Tk`` positions); arguments as
    :func:`mixarch.ops.infllm_v2.attention.reference_infllm_v2_decode`. No gradient. Needs
    :func:`~mixarch.kernels.triton.infllm_v2.plugin.supports_decode`."""
    if not exact_normalizer and compressed_k2 is None:
        raise ValueError("the approximate normalizer needs the C2 compressed keys")
    args = (q.detach(), k.detach(), v.detach(), compressed_k.detach(),
            None if compressed_k2 is None else compressed_k2.detach(), block_size, kernel_size, kernel_stride,
            init_blocks, local_blocks, topk, scale, exact_normalizer)
    return _decode(*args, direct=True) if eager(*args[:5]) else infllm_v2_decode_op(*args)
