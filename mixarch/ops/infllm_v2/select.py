"""InfLLM-V2 stage 1: compressed-key scores, block max-pool, init/local forcing and top-k block selection.

Notation: query ``i`` of ``Tq`` sits at absolute position ``t = Tk - Tq + i`` (bottom-right aligned, so decode
and chunked prefill share one rule); ``l, s`` = ``kernel_size, kernel_stride``; ``B`` = ``block_size``;
``b_t = t // B``; ``nb = ceil(Tk / B)`` blocks.

1. **Visibility.** Compressed key ``j`` (tokens ``[j*s, j*s + l - 1]``) is visible to ``t`` iff its whole
   window is: ``j*s + l - 1 <= t``. The released stage-1 kernel (``apply_mask_stage1`` in
   ``infllmv2_cuda_impl/csrc/flash_attn/src/mask.h``) writes this as ``j < (t - s + 1) / s`` with hard-coded
   ``s = 16`` and ``l = 2s``, using the row index inside the query chunk (it is only ever called with
   ``Tq == Tk`` or, at decode, non-causally over the cache, where all cached keys are complete); we use
   absolute positions, which is the same rule in those cases and the natural one for chunked prefill.
   C2 keys (``4l``, ``4s``) use the same rule, ``j*4s + 4l - 1 <= t`` (as the torch reference of the
   compressed-LSE stage-1 kernel in sglang's ``sgl_kernel`` InfLLM-V2 tests does).
2. **Scores.** ``p_h(j) = exp(q_h . C1_j * scale - lse_h)`` over visible ``j`` (0 elsewhere), summed over the
   ``G`` query heads of the KV group: ``S_j``. ``lse_h`` is the log-sum-exp over the visible C1 keys (exact
   normalizer) or over the visible C2 keys (``exact_normalizer=False``, the released "compressed LSE"
   approximation). When no C2 key is visible yet (``t < 4l - 1``) we fall back to the exact C1 normalizer:
   the kernel's normalizer is then an empty sum (undefined); with the seed's defaults such queries have
   ``b_t <= 1 <= local_blocks``, i.e. only forced blocks, so the choice cannot change a selection.
   (SALA repeats the query heads up to 16 and averages the outputs when ``G < 16``; that scales ``S`` by a
   constant and changes nothing, so we sum over the actual ``G`` heads.)
3. **Block scores.** ``score_b = max S_j`` over the visible ``j`` whose window overlaps block ``b``:
   ``j in [b*r - m + 1, b*r + r - 1]`` with ``r = B / s``, ``m = l / s``. For the seed (``r = 4``, ``m = 2``)
   this is ``[4b - 1, 4b + 3]``, the released ``max_pooling_1d`` (kernel ``r + 1``, stride ``r``, padding 1;
   the CUDA kernel hard-codes padding 1 and kernel ``r + 1``, which equals the overlap rule for ``l = 2s``,
   and the older Triton ``transform_score`` uses padding ``m - 1`` and kernel ``r + m - 1``, i.e. the overlap
   rule for any ``m``). The kernel pools over invisible-but-existing keys too (their score is 0); with
   ``l <= B`` every non-forced block ``b < b_t`` has a visible overlapping key, so excluding them changes
   nothing there and keeps the rule prefix-consistent (decode == prefill). No visible key: ``-inf``.
4. **Forcing.** ``+inf`` for init blocks ``b < init_blocks`` and for the local blocks
   ``b_t - local_blocks <= b <= b_t``. This follows the current released ``max_pooling_1d`` kernel
   (``off_bq >= off_bk && off_bq <= off_bk + local_blocks``), which forces ``local_blocks + 1`` blocks
   including the current one, while the paper counts 32 local blocks: with the SALA defaults
   (``topk = 96`` total, ``local_blocks = 32``) that leaves ``96 - 1 - 33 = 62`` free picks, not 63. (Older
   releases wrote ``-inf`` for ``local_blocks`` local blocks and relied on a separate stage-2
   ``block_window_size``.)
5. **Top-k.** Candidates are the blocks ``b <= b_t``; later blocks are never selected. (The released code takes
   ``min(topk, nb)`` of all ``nb`` blocks, sorts them and overwrites indices ``> b_t`` with -1. Later blocks
   score 0 there (their keys are not visible yet), ``-inf``, or ``+inf`` when ``b < init_blocks``, so the two
   only differ if an earlier block's score underflowed to 0, or if ``init_blocks > b_t + 1`` and ``topk`` is
   below the number of forced blocks.) We keep ``min(topk, b_t + 1)`` blocks: highest score first,
   ties (e.g. among forced ``+inf`` blocks, or adjacent blocks sharing their maximal compressed key) broken
   toward the **larger** block index, so the current block always survives even when
   ``init_blocks + local_blocks + 1 > topk``. ``topk`` includes the forced blocks.

Output format of :func:`select_blocks`: int64 ``[B, Hkv, Tq, topk]``, each row the selected block indices in
ascending order followed by ``-1`` padding (``topk - min(topk, b_t + 1)`` entries).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mixarch.ops.infllm_v2.compress import C2_FACTOR


def _positions(t_q: int, t_k: int, device) -> torch.Tensor:
    return torch.arange(t_q, device=device) + (t_k - t_q)


def _visible(n: int, pos: torch.Tensor, kernel_size: int, kernel_stride: int) -> torch.Tensor:
    """``[Tq, n]``: compressed key ``j`` lies entirely at or before the query's position."""
    ends = torch.arange(n, device=pos.device) * kernel_stride + kernel_size - 1
    return ends.unsqueeze(0) <= pos.unsqueeze(1)


def _masked_lse(logits: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over the visible last-dim entries (``-inf`` where none), keepdim."""
    return torch.logsumexp(logits.masked_fill(~visible, float("-inf")), dim=-1, keepdim=True)


@torch.no_grad()
def stage1_scores(q: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor | None, t_k: int, *, kernel_size: int,
                  kernel_stride: int, scale: float, exact_normalizer: bool = True) -> torch.Tensor:
    """Group-summed compressed-key probabilities ``S`` ``[B, Hkv, Tq, N1]`` (fp32; fp64 for fp64 ``q``).

    ``q`` ``[B, Tq, Hq, D]`` are the last ``Tq`` of ``t_k`` positions; ``c1`` ``[B, N1, Hkv, D]`` the compressed
    keys of those ``t_k`` keys; ``c2`` the coarse ones (needed only when ``exact_normalizer`` is False).
    Entries of keys not visible to a query are 0 (module doc, steps 1-2).
    """
    b, t_q, h_q, d = q.shape
    n1, h_kv = c1.shape[1], c1.shape[2]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qg = q.detach().to(acc).reshape(b, t_q, h_kv, h_q // h_kv, d)
    if n1 == 0:
        return qg.new_zeros((b, h_kv, t_q, 0))
    pos = _positions(t_q, t_k, q.device)
    vis1 = _visible(n1, pos, kernel_size, kernel_stride)
    logits1 = torch.einsum("bqhgd,bjhd->bhgqj", qg, c1.detach().to(acc)) * scale
    lse = _masked_lse(logits1, vis1)  # [B, Hkv, G, Tq, 1]
    if not exact_normalizer:
        if c2 is None:
            raise ValueError("the approximate normalizer needs the C2 compressed keys")
        vis2 = _visible(c2.shape[1], pos, C2_FACTOR * kernel_size, C2_FACTOR * kernel_stride)
        if c2.shape[1] > 0:
            logits2 = torch.einsum("bqhgd,bjhd->bhgqj", qg, c2.detach().to(acc)) * scale
            lse = torch.where(vis2.any(dim=-1, keepdim=True), _masked_lse(logits2, vis2), lse)
    p = torch.where(vis1, torch.exp(logits1 - lse), torch.zeros((), dtype=acc, device=q.device))
    return p.sum(dim=2)


@torch.no_grad()
def block_scores(s: torch.Tensor, t_k: int, *, block_size: int, kernel_size: int, kernel_stride: int,
                 init_blocks: int, local_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-pooled, forced block scores ``[B, Hkv, Tq, nb]`` and the candidate mask ``[Tq, nb]`` (``b <= b_t``).

    ``s`` is :func:`stage1_scores`' output for the last ``Tq`` of ``t_k`` positions (module doc, steps 3-4).
    """
    t_q, n1 = s.shape[2], s.shape[3]
    r, m = block_size // kernel_stride, kernel_size // kernel_stride
    nb = math.ceil(t_k / block_size)
    pos = _positions(t_q, t_k, s.device)
    s = s.masked_fill(~_visible(n1, pos, kernel_size, kernel_stride), float("-inf"))
    # padded index p = j + m - 1; block b pools p in [b*r, b*r + r + m - 2]; r*nb >= N1 always holds
    padded = F.pad(s, (m - 1, r * nb - n1), value=float("-inf"))
    scores = padded.unfold(-1, r + m - 1, r).amax(dim=-1)  # [B, Hkv, Tq, nb]
    blk = torch.arange(nb, device=s.device).unsqueeze(0)
    bq = (pos // block_size).unsqueeze(1)
    forced = (blk < init_blocks) | ((blk >= bq - local_blocks) & (blk <= bq))
    scores = scores.masked_fill(forced, float("inf"))
    return scores, blk <= bq


@torch.no_grad()
def select_blocks(scores: torch.Tensor, candidate: torch.Tensor, topk: int) -> torch.Tensor:
    """Top-``topk`` candidate blocks per query: int64 ``[B, Hkv, Tq, topk]``, ascending, ``-1`` padded.

    Order: candidates first, then higher score, then larger block index (module doc, step 5).
    """
    nb = scores.shape[-1]
    rev = torch.arange(nb - 1, -1, -1, device=scores.device)
    s_rev = scores.index_select(-1, rev)  # reversed so that stable sorts prefer the larger block index
    c_rev = candidate.index_select(-1, rev).expand_as(s_rev)
    by_score = torch.sort(s_rev, dim=-1, descending=True, stable=True).indices
    cand_sorted = c_rev.gather(-1, by_score).to(torch.int8)
    order = by_score.gather(-1, torch.sort(cand_sorted, dim=-1, descending=True, stable=True).indices)
    k = min(topk, nb)
    chosen = (nb - 1) - order[..., :k]
    valid = c_rev.gather(-1, order[..., :k]).bool()
    chosen = torch.where(valid, chosen, torch.full_like(chosen, nb))
    chosen = torch.sort(chosen, dim=-1).values
    chosen = torch.where(chosen == nb, torch.full_like(chosen, -1), chosen)
    if k < topk:
        chosen = F.pad(chosen, (0, topk - k), value=-1)
    return chosen
