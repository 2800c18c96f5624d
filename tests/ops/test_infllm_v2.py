"""InfLLM-V2 reference: compressed keys and their cache, stage-1 selection, stage 2, decode and chunked prefill."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixarch.ops import infllm_v2_attention, naive_softmax_attention
from mixarch.ops.infllm_v2 import (
    C2_FACTOR,
    CompressedKeyCache,
    compress_keys,
    forced_blocks,
    num_compressed,
    select_blocks,
    sparse_block_attention,
    update_compressed,
    with_forced_blocks,
)
from mixarch.testing import assert_close, assert_close_rel, nan_poison
from mixarch.testing.strategies import (
    GROUP_SIZES,
    HEAD_DIMS,
    SEQ_LENS,
    SMALL_SEQ_LENS,
    compositions,
    seeded_randn,
    seeds,
)

F64 = torch.float64
SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KV_HEADS = (1, 2, 3)


@st.composite
def configs(draw, *, free_topk: bool = True) -> dict:
    """Seed ratios at small scale: kernel = 2 * stride, block = 4 * stride (stride 1, 2, 4)."""
    s = draw(st.sampled_from((1, 2, 4)))
    cfg = dict(kernel_stride=s, kernel_size=2 * s, block_size=4 * s,
               init_blocks=draw(st.integers(0, 2)), local_blocks=draw(st.integers(0, 3)))
    forced = cfg["init_blocks"] + cfg["local_blocks"] + 1
    cfg["topk"] = draw(st.integers(1, forced + 4)) if free_topk else forced + draw(st.integers(0, 4))
    return cfg


def _qkv(seed: int, b: int, t: int, h_kv: int, g: int, d: int, dtype=torch.float32, t_q: int | None = None):
    t_q = t if t_q is None else t_q
    q = seeded_randn((b, t_q, h_kv * g, d), seed, dtype=dtype)
    k = seeded_randn((b, t, h_kv, d), seed + 1, dtype=dtype)
    v = seeded_randn((b, t, h_kv, d), seed + 2, dtype=dtype)
    return q, k, v


def _dense_masked_attention(q, k, v, indices, block_size):
    """fp64 attention over the causal tokens of the given blocks (independent of the op's mask helper)."""
    b, t_q, h_q, d = q.shape
    t_k, h_kv = k.shape[1], k.shape[2]
    g = h_q // h_kv
    tok_block = torch.arange(t_k) // block_size
    in_sel = (tok_block.view(1, 1, 1, 1, t_k) == indices.unsqueeze(-1)).any(dim=-2)  # [B, Hkv, Tq, Tk]
    pos = torch.arange(t_q) + t_k - t_q
    mask = in_sel & (torch.arange(t_k).view(1, t_k) <= pos.view(t_q, 1))
    mask = mask.repeat_interleave(g, dim=1)  # [B, Hq, Tq, Tk]
    kf, vf = k.to(F64).repeat_interleave(g, dim=2), v.to(F64).repeat_interleave(g, dim=2)
    logits = torch.einsum("bqhd,bkhd->bhqk", q.to(F64), kf) * d ** -0.5
    p = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, vf)


def _brute_force_indices(q, k, cfg, exact_normalizer):
    """Loop-over-queries stage 1 + selection for batch 0, straight from the spec: ``[Hkv, Tq, topk]``."""
    win, s, bs = cfg["kernel_size"], cfg["kernel_stride"], cfg["block_size"]
    l2, s2 = C2_FACTOR * win, C2_FACTOR * s
    init, local, topk = cfg["init_blocks"], cfg["local_blocks"], cfg["topk"]
    q, k = q[0].to(F64), k[0].to(F64)
    t_q, h_q, d = q.shape
    t_k, h_kv = k.shape[0], k.shape[1]
    g = h_q // h_kv
    scale = d ** -0.5
    c1 = [k[j * s: j * s + win].mean(dim=0) for j in range(t_k) if j * s + win <= t_k]
    c2 = [k[j * s2: j * s2 + l2].mean(dim=0) for j in range(t_k) if j * s2 + l2 <= t_k]
    out = torch.full((h_kv, t_q, topk), -1, dtype=torch.int64)
    for kv in range(h_kv):
        for i in range(t_q):
            t = t_k - t_q + i
            vis1 = [j for j in range(len(c1)) if j * s + win - 1 <= t]
            vis2 = [j for j in range(len(c2)) if j * s2 + l2 - 1 <= t]
            score_j = dict.fromkeys(vis1, 0.0)
            for h in range(kv * g, (kv + 1) * g):
                logit = {j: float(q[i, h] @ c1[j][kv]) * scale for j in vis1}
                if exact_normalizer or not vis2:
                    norm = list(logit.values())
                else:
                    norm = [float(q[i, h] @ c2[j][kv]) * scale for j in vis2]
                if not norm:
                    continue
                mx = max(norm)
                lse = mx + math.log(sum(math.exp(x - mx) for x in norm))
                for j in vis1:
                    score_j[j] += math.exp(logit[j] - lse)
            b_t = t // bs
            block_score = {}
            for b in range(b_t + 1):
                if b < init or b >= b_t - local:
                    block_score[b] = math.inf
                else:
                    over = [score_j[j] for j in vis1 if j * s <= (b + 1) * bs - 1 and j * s + win - 1 >= b * bs]
                    block_score[b] = max(over, default=-math.inf)
            ranked = sorted(block_score, key=lambda b: (-block_score[b], -b))
            chosen = sorted(ranked[:topk])
            out[kv, i, :len(chosen)] = torch.tensor(chosen, dtype=torch.int64)
    return out


# ---------------------------------------------------------------------------------------------------------------
# compressed keys and their incremental cache


@settings(max_examples=25, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), stride=st.sampled_from((1, 2, 4, 16)), h=st.sampled_from(KV_HEADS),
       dtype=st.sampled_from((torch.float32, torch.bfloat16, F64)), data=st.data())
def test_compressed_cache_chunked_equals_whole(seed, t, stride, h, dtype, data):
    win, s = 2 * stride, stride
    k = seeded_randn((2, t, h, 16), seed, dtype=dtype)
    parts = data.draw(compositions(t, max_parts=6))
    with nan_poison():
        whole1, whole2 = compress_keys(k, win, s), compress_keys(k, C2_FACTOR * win, C2_FACTOR * s)
        cache = CompressedKeyCache.empty(2, h, 16, kernel_size=win, kernel_stride=s, dtype=dtype)
        pending, comp, start = None, None, 0
        for n in parts:
            cache = cache.append(k[:, start:start + n])
            pending, comp = update_compressed(pending, comp, k[:, start:start + n], win, s)
            start += n
    assert whole1.shape == (2, num_compressed(t, win, s), h, 16) and whole1.dtype == dtype
    assert torch.equal(cache.c1, whole1) and torch.equal(comp, whole1)
    assert torch.equal(cache.c2, whole2)
    assert torch.equal(pending, k[:, whole1.shape[1] * s:]) and pending.shape[1] < win
    assert torch.equal(cache.pending2, k[:, whole2.shape[1] * C2_FACTOR * s:])
    # the windows are means of the right keys
    ref = torch.stack([k[:, j * s: j * s + win].to(F64).mean(dim=1) for j in range(whole1.shape[1])], dim=1) \
        if whole1.shape[1] else whole1.to(F64)
    assert_close("compressed keys", ref, whole1)


# ---------------------------------------------------------------------------------------------------------------
# stage 1 + stage 2 against dense attention


@settings(max_examples=20, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(KV_HEADS), g=st.sampled_from(GROUP_SIZES),
       d=st.sampled_from(HEAD_DIMS), cfg=configs(), exact=st.booleans(), data=st.data())
def test_all_blocks_selected_equals_causal_attention(seed, t, h_kv, g, d, cfg, exact, data):
    cfg["topk"] = math.ceil(t / cfg["block_size"]) + data.draw(st.integers(0, 3))
    dense_len = data.draw(st.integers(0, t))  # Tk >= dense_len: the sparse path
    q, k, v = _qkv(seed, 2, t, h_kv, g, d)
    with nan_poison():
        o, idx = infllm_v2_attention(q, k, v, dense_len=dense_len, exact_normalizer=exact, return_indices=True,
                                     **cfg)
    assert idx is not None and o.dtype == q.dtype
    ref = naive_softmax_attention(q.to(F64), k.to(F64), v.to(F64))
    assert_close("sparse == causal (fp32)", ref, o)
    qb, kb, vb = (x.bfloat16() for x in (q, k, v))
    with nan_poison():
        ob = infllm_v2_attention(qb, kb, vb, dense_len=dense_len, exact_normalizer=exact, **cfg)
    assert ob.dtype == torch.bfloat16
    ref_b = naive_softmax_attention(qb.to(F64), kb.to(F64), vb.to(F64))
    assert_close_rel("sparse == causal (bf16)", ref_b, ob, tol=5e-3)


@settings(max_examples=15, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(KV_HEADS), g=st.sampled_from(GROUP_SIZES),
       cfg=configs(), extra=st.integers(1, 100))
def test_below_dense_len_is_causal_attention(seed, t, h_kv, g, cfg, extra):
    q, k, v = _qkv(seed, 1, t, h_kv, g, 16)
    with nan_poison():
        o, idx = infllm_v2_attention(q, k, v, dense_len=t + extra, return_indices=True, **cfg)
    assert idx is None
    assert_close("dense path", naive_softmax_attention(q.to(F64), k.to(F64), v.to(F64)), o)


# ---------------------------------------------------------------------------------------------------------------
# selection


@settings(max_examples=25, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), t_q=st.sampled_from((1, 15, 64, 200)), h_kv=st.sampled_from(KV_HEADS),
       g=st.sampled_from(GROUP_SIZES), cfg=configs(), exact=st.booleans())
def test_selection_invariants(seed, t, t_q, h_kv, g, cfg, exact):
    t_q = min(t_q, t)
    q, k, v = _qkv(seed, 2, t, h_kv, g, 16, t_q=t_q)
    with nan_poison():
        o, idx = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=exact, return_indices=True, **cfg)
    bs, topk, init, local = cfg["block_size"], cfg["topk"], cfg["init_blocks"], cfg["local_blocks"]
    assert idx.dtype == torch.int64 and idx.shape == (2, h_kv, t_q, topk)
    for row, t_abs in zip(idx.reshape(-1, t_q, topk).transpose(0, 1), range(t - t_q, t)):
        b_t = t_abs // bs
        forced = sorted({b for b in range(b_t + 1) if b < init or b >= b_t - local})
        n_valid = min(topk, b_t + 1)
        for sel in row.tolist():
            valid = sel[:n_valid]
            assert sel[n_valid:] == [-1] * (topk - n_valid), sel  # -1 padding only at the tail
            assert valid == sorted(set(valid)) and all(0 <= b <= b_t for b in valid), sel  # sorted, unique, causal
            if len(forced) <= topk:
                assert set(forced) <= set(valid), (forced, sel)
            else:  # more forced blocks than slots: ties go to the most recent blocks
                assert valid == forced[-topk:], (forced, sel)
    assert_close("stage 2 == dense masked reference", _dense_masked_attention(q, k, v, idx, bs), o)


@settings(max_examples=20, **SLOW)
@given(seed=seeds, t=st.sampled_from((15, 40, 63, 65)), t_q=st.sampled_from((1, 7, 65)), h_kv=st.sampled_from((1, 2)),
       g=st.sampled_from((1, 2, 3)), cfg=configs(), exact=st.booleans())
def test_selection_matches_brute_force(seed, t, t_q, h_kv, g, cfg, exact):
    t_q = min(t_q, t)
    q, k, v = _qkv(seed, 1, t, h_kv, g, 16, dtype=F64, t_q=t_q)
    with nan_poison():
        o, idx = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=exact, return_indices=True, **cfg)
    expected = _brute_force_indices(q, k, cfg, exact)
    assert torch.equal(idx[0], expected), (idx[0], expected)
    assert_close("stage 2", _dense_masked_attention(q, k, v, expected.unsqueeze(0), cfg["block_size"]), o,
                 rtol=1e-10, atol=1e-12)


@settings(max_examples=20, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(KV_HEADS), g=st.sampled_from((2, 3, 4, 8)),
       cfg=configs(free_topk=False))
def test_exact_and_approximate_normalizer_agree_on_shared_query_direction(seed, t, h_kv, g, cfg):
    """When the heads of a group query along one direction (per token, any positive gains), every head ranks
    the compressed keys identically, so no per-head normalizer can reorder the group sums: both normalizers
    must pick the same blocks. With independent head directions they do differ (checked below)."""
    b, d = 1, 16
    u = seeded_randn((b, t, h_kv, 1, d), seed, dtype=F64)
    gain = seeded_randn((b, t, h_kv, g, 1), seed + 3, dtype=F64).abs() * 2 + 0.1
    q = (u * gain).reshape(b, t, h_kv * g, d)
    k = seeded_randn((b, t, h_kv, d), seed + 1, dtype=F64, scale=2.0)
    v = seeded_randn((b, t, h_kv, d), seed + 2, dtype=F64)
    with nan_poison():
        _, exact = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=True, return_indices=True, **cfg)
        _, approx = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=False, return_indices=True, **cfg)
    assert torch.equal(exact, approx)


def test_normalizers_differ_somewhere():
    """Sanity check that the two normalizers are really different computations (not a tautological test)."""
    cfg = dict(kernel_stride=1, kernel_size=2, block_size=4, init_blocks=1, local_blocks=0, topk=3)
    q, k, v = _qkv(7, 1, 200, 1, 8, 16)
    _, exact = infllm_v2_attention(q, k * 3, v, dense_len=0, return_indices=True, **cfg)
    _, approx = infllm_v2_attention(q, k * 3, v, dense_len=0, exact_normalizer=False, return_indices=True, **cfg)
    assert not torch.equal(exact, approx)


def test_dominant_block_is_selected_by_both_normalizers():
    """Keys of one block align with every query: it is the single free pick for all later queries."""
    cfg = dict(kernel_stride=2, kernel_size=4, block_size=8, init_blocks=1, local_blocks=1, topk=4)
    t, hot = 200, 5
    q, k, v = _qkv(3, 1, t, 2, 4, 16)
    u = seeded_randn((16,), 11)
    q = q * 0.1 + u
    k[:, hot * 8:(hot + 1) * 8] += 3 * u
    for exact in (True, False):
        _, idx = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=exact, return_indices=True, **cfg)
        for t_abs in range((hot + 3) * 8, t):
            assert (idx[0, :, t_abs] == hot).any(dim=-1).all(), (t_abs, idx[0, :, t_abs])


def test_select_blocks_tie_breaking():
    scores = torch.tensor([[[[1.0, 5.0, 5.0, 0.5, 5.0, float("inf"), 2.0]]]])
    cand = torch.tensor([[True] * 6 + [False]])
    assert select_blocks(scores, cand, 2).tolist() == [[[[4, 5]]]]
    assert select_blocks(scores, cand, 3).tolist() == [[[[2, 4, 5]]]]
    assert select_blocks(scores, cand, 9).tolist() == [[[[0, 1, 2, 3, 4, 5, -1, -1, -1]]]]


# ---------------------------------------------------------------------------------------------------------------
# decode and chunked prefill


@settings(max_examples=8, **SLOW)
@given(seed=seeds, t=st.sampled_from(SMALL_SEQ_LENS + (130,)), h_kv=st.sampled_from(KV_HEADS),
       g=st.sampled_from(GROUP_SIZES), cfg=configs(), exact=st.booleans(), data=st.data())
def test_decode_matches_full_forward(seed, t, h_kv, g, cfg, exact, data):
    dense_len = data.draw(st.integers(0, min(t, 3 * cfg["block_size"])))
    q, k, v = _qkv(seed, 2, t, h_kv, g, 16, dtype=F64)
    with nan_poison():
        full, full_idx = infllm_v2_attention(q, k, v, dense_len=min(dense_len, t), exact_normalizer=exact,
                                             return_indices=True, **cfg)
        cache = CompressedKeyCache.empty(2, h_kv, 16, kernel_size=cfg["kernel_size"],
                                         kernel_stride=cfg["kernel_stride"], dtype=F64)
        for i in range(t):
            cache = cache.append(k[:, i:i + 1])
            o, idx = infllm_v2_attention(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1], dense_len=dense_len,
                                         exact_normalizer=exact, compressed_k=cache.c1, compressed_k2=cache.c2,
                                         return_indices=True, **cfg)
            if i + 1 >= dense_len:
                assert torch.equal(idx, full_idx[:, :, i:i + 1]), i
                assert_close(f"decode step {i}", full[:, i:i + 1], o, rtol=1e-12, atol=1e-12)
            else:
                assert idx is None
                ref = naive_softmax_attention(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1])
                assert_close(f"dense decode step {i}", ref, o, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(KV_HEADS), g=st.sampled_from(GROUP_SIZES),
       cfg=configs(), exact=st.booleans(), data=st.data())
def test_chunked_prefill_matches_full_forward(seed, t, h_kv, g, cfg, exact, data):
    parts = data.draw(compositions(t, max_parts=5))
    q, k, v = _qkv(seed, 1, t, h_kv, g, 16, dtype=F64)
    with nan_poison():
        full, full_idx = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=exact, return_indices=True,
                                             **cfg)
        cache = CompressedKeyCache.empty(1, h_kv, 16, kernel_size=cfg["kernel_size"],
                                         kernel_stride=cfg["kernel_stride"], dtype=F64)
        start = 0
        for n in parts:
            end = start + n
            cache = cache.append(k[:, start:end])
            o, idx = infllm_v2_attention(q[:, start:end], k[:, :end], v[:, :end], dense_len=0,
                                         exact_normalizer=exact, compressed_k=cache.c1, compressed_k2=cache.c2,
                                         return_indices=True, **cfg)
            assert torch.equal(idx, full_idx[:, :, start:end]), (start, end)
            assert_close(f"chunk [{start}, {end})", full[:, start:end], o, rtol=1e-12, atol=1e-12)
            start = end


# ---------------------------------------------------------------------------------------------------------------
# gradients


@settings(max_examples=12, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(KV_HEADS), g=st.sampled_from(GROUP_SIZES),
       d=st.sampled_from(HEAD_DIMS), cfg=configs(), exact=st.booleans())
def test_stage2_gradients_match_dense_masked_reference(seed, t, h_kv, g, d, cfg, exact):
    q, k, v = (x.requires_grad_() for x in _qkv(seed, 2, t, h_kv, g, d))
    grad_out = seeded_randn((2, t, h_kv * g, d), seed + 5)
    with nan_poison():
        o, idx = infllm_v2_attention(q, k, v, dense_len=0, exact_normalizer=exact, return_indices=True, **cfg)
        dq, dk, dv = torch.autograd.grad(o, (q, k, v), grad_out)
    q64, k64, v64 = (x.detach().to(F64).requires_grad_() for x in (q, k, v))
    ref = _dense_masked_attention(q64, k64, v64, idx, cfg["block_size"])
    rq, rk, rv = torch.autograd.grad(ref, (q64, k64, v64), grad_out.to(F64))
    for name, r, x in (("dq", rq, dq), ("dk", rk, dk), ("dv", rv, dv)):
        assert_close(name, r, x, rtol=1e-4, atol=1e-5)


@settings(max_examples=20, **SLOW)
@given(seed=seeds, t=st.sampled_from((1, 15, 40, 65)), t_q=st.sampled_from((1, 7, 65)), block=st.sampled_from((1, 4, 8)),
       init=st.integers(0, 2), local=st.sampled_from((None, 0, 1, 3)))
def test_forced_blocks_follow_the_selection_rule(seed, t, t_q, block, init, local):
    """forced_blocks lists exactly the blocks the selection forces (b < init or b_t - local <= b <= b_t, b <= b_t),
    ascending; with_forced_blocks adds them to any selection without repeating a block."""
    t_q = min(t_q, t)
    forced = forced_blocks(t_q, t, block_size=block, init_blocks=init, local_blocks=local)
    gen = torch.Generator().manual_seed(seed)
    nb = math.ceil(t / block)
    idx = torch.stack([torch.randperm(nb + 1, generator=gen)[:3] - 1 for _ in range(t_q)]).view(1, 1, t_q, -1)
    union = with_forced_blocks(idx, t, block_size=block, init_blocks=init, local_blocks=local)
    for i in range(t_q):
        b_t = (t - t_q + i) // block
        want = [b for b in range(b_t + 1) if b < init or (local is not None and b >= b_t - local)]
        assert [b for b in forced[i].tolist() if b >= 0] == want
        got = [b for b in union[0, 0, i].tolist() if b >= 0]
        assert len(got) == len(set(got)), got  # (``-1`` may repeat: the selection's padding)
        assert set(got) == set(want) | {b for b in idx[0, 0, i].tolist() if b >= 0}


@settings(max_examples=12, **SLOW)
@given(seed=seeds, t=st.sampled_from((15, 40, 65)), t_q=st.sampled_from((1, 9, 65)), g=st.sampled_from((1, 3)),
       init=st.integers(0, 2), local=st.sampled_from((None, 0, 2)))
def test_stage2_forced_blocks_equal_selecting_them(seed, t, t_q, g, init, local):
    """sparse_block_attention with forcing attends to the union of the selection and the forced blocks."""
    t_q = min(t_q, t)
    q = seeded_randn((1, t_q, 2 * g, 16), seed)
    k, v = (seeded_randn((1, t, 2, 16), seed + i) for i in (1, 2))
    block = 8
    own = ((torch.arange(t_q) + t - t_q) // block).view(1, 1, t_q, 1).expand(1, 2, t_q, 1)
    idx = torch.cat([own, torch.full((1, 2, t_q, 1), -1)], -1)  # the own block, so every row sees a key
    got = sparse_block_attention(q, k, v, idx, block_size=block, init_blocks=init, local_blocks=local)
    union = with_forced_blocks(idx, t, block_size=block, init_blocks=init, local_blocks=local)
    want = sparse_block_attention(q, k, v, union, block_size=block)
    assert_close("o", want, got, rtol=0, atol=0)
    if init == 0 and local is None:
        assert torch.equal(union, idx)
    with pytest.raises(ValueError, match="local_blocks"):
        sparse_block_attention(q, k, v, idx, block_size=block, local_blocks=-1)


# ---------------------------------------------------------------------------------------------------------------
# argument checks


def test_invalid_arguments():
    q, k, v = _qkv(0, 1, 32, 1, 2, 16)
    with pytest.raises(ValueError, match="multiples of kernel_stride"):
        infllm_v2_attention(q, k, v, block_size=10, kernel_size=4, kernel_stride=4, dense_len=0)
    with pytest.raises(ValueError, match="topk"):
        infllm_v2_attention(q, k, v, block_size=8, kernel_size=4, kernel_stride=2, topk=0, dense_len=0)
    with pytest.raises(ValueError, match="as many keys"):
        infllm_v2_attention(torch.cat([q, q], dim=1), k, v, dense_len=0)
    with pytest.raises(ValueError, match="compressed_k has shape"):
        infllm_v2_attention(q, k, v, block_size=8, kernel_size=4, kernel_stride=2, dense_len=0,
                            compressed_k=compress_keys(k[:, :20], 4, 2))
    with pytest.raises(ValueError, match="compressed_k2 has shape"):
        infllm_v2_attention(q, k, v, block_size=8, kernel_size=4, kernel_stride=2, dense_len=0,
                            exact_normalizer=False, compressed_k2=compress_keys(k, 4, 2))
