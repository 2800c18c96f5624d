"""Sliding-window attention: masked reference, window >= T, decode, GQA, packed sequences, argument checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixarch.ops import naive_sliding_window_attention, naive_softmax_attention, sliding_window_attention
from mixarch.testing import assert_close, assert_close_rel, nan_poison
from mixarch.testing.strategies import (
    GROUP_SIZES,
    HEAD_COUNTS,
    HEAD_DIMS,
    SEQ_LENS,
    compositions,
    cu_seqlens_from,
    seeded_randn,
    seeds,
)

F64 = torch.float64
SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
windows = st.sampled_from((1, 2, 7, 16, 63, 64, 100))


def _qkv(seed, b, t, h_kv, g, d, dtype=torch.float32):
    q = seeded_randn((b, t, h_kv * g, d), seed, dtype=dtype)
    k = seeded_randn((b, t, h_kv, d), seed + 1, dtype=dtype)
    v = seeded_randn((b, t, h_kv, d), seed + 2, dtype=dtype)
    return q, k, v


def _loop_reference(q, k, v, window):
    """Per-query fp64 softmax over keys ``t - window < j <= t`` (queries = last Tq positions)."""
    t_q, t_k, g = q.shape[1], k.shape[1], q.shape[2] // k.shape[2]
    out = torch.empty(q.shape, dtype=F64)
    for i in range(t_q):
        t = t_k - t_q + i
        lo = max(0, t - window + 1)
        kk = k[:, lo:t + 1].to(F64).repeat_interleave(g, dim=2)
        vv = v[:, lo:t + 1].to(F64).repeat_interleave(g, dim=2)
        p = torch.softmax(torch.einsum("bhd,bkhd->bhk", q[:, i].to(F64), kk) * q.shape[-1] ** -0.5, dim=-1)
        out[:, i] = torch.einsum("bhk,bkhd->bhd", p, vv)
    return out


@settings(max_examples=20, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(HEAD_COUNTS), g=st.sampled_from(GROUP_SIZES),
       d=st.sampled_from(HEAD_DIMS), window=windows)
def test_matches_masked_reference(seed, t, h_kv, g, d, window):
    q, k, v = _qkv(seed, 2, t, h_kv, g, d)
    with nan_poison():
        o = sliding_window_attention(q, k, v, window)
        naive = naive_sliding_window_attention(q.to(F64), k.to(F64), v.to(F64), window)
    ref = _loop_reference(q, k, v, window)
    assert_close("naive vs loop", ref, naive, rtol=1e-10, atol=1e-12)
    assert_close("sliding window (fp32)", ref, o)
    qb, kb, vb = (x.bfloat16() for x in (q, k, v))
    with nan_poison():
        ob = sliding_window_attention(qb, kb, vb, window)
    assert_close_rel("sliding window (bf16)", _loop_reference(qb, kb, vb, window), ob)


@settings(max_examples=15, **SLOW)
@given(seed=seeds, t=st.sampled_from(SEQ_LENS), h_kv=st.sampled_from(HEAD_COUNTS), g=st.sampled_from(GROUP_SIZES),
       extra=st.integers(0, 50))
def test_window_at_least_t_is_causal_attention(seed, t, h_kv, g, extra):
    q, k, v = _qkv(seed, 1, t, h_kv, g, 16)
    with nan_poison():
        o = sliding_window_attention(q, k, v, t + extra)
    assert_close("window >= T", naive_softmax_attention(q.to(F64), k.to(F64), v.to(F64)), o)


@settings(max_examples=12, **SLOW)
@given(seed=seeds, t=st.sampled_from((15, 64, 65, 130)), h_kv=st.sampled_from(HEAD_COUNTS),
       g=st.sampled_from(GROUP_SIZES), window=windows, data=st.data())
def test_decode_and_chunked_prefill_match_full(seed, t, h_kv, g, window, data):
    q, k, v = _qkv(seed, 2, t, h_kv, g, 16, dtype=F64)
    parts = data.draw(compositions(t, max_parts=5))
    with nan_poison():
        full = sliding_window_attention(q, k, v, window)
        for i in range(t):  # one query at a time over the growing prefix
            o = sliding_window_attention(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1], window)
            assert_close(f"decode step {i}", full[:, i:i + 1], o, rtol=1e-12, atol=1e-12)
        start = 0
        for n in parts:
            o = sliding_window_attention(q[:, start:start + n], k[:, :start + n], v[:, :start + n], window)
            assert_close(f"chunk at {start}", full[:, start:start + n], o, rtol=1e-12, atol=1e-12)
            start += n


@settings(max_examples=12, **SLOW)
@given(seed=seeds, h_kv=st.sampled_from(HEAD_COUNTS), g=st.sampled_from(GROUP_SIZES), window=windows, data=st.data())
def test_gqa_equals_repeated_kv_heads(seed, h_kv, g, window, data):
    t = data.draw(st.sampled_from(SEQ_LENS))
    q, k, v = _qkv(seed, 1, t, h_kv, g, 32)
    with nan_poison():
        gqa = sliding_window_attention(q, k, v, window)
        mha = sliding_window_attention(q, k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2), window)
    assert_close("GQA == repeated KV", mha, gqa, rtol=1e-5, atol=1e-6)


@settings(max_examples=12, **SLOW)
@given(seed=seeds, window=windows, data=st.data())
def test_packed_sequences_equal_separate_runs(seed, window, data):
    lengths = data.draw(compositions(data.draw(st.sampled_from((15, 64, 130))), max_parts=4))
    q, k, v = _qkv(seed, 1, sum(lengths), 2, 3, 16)
    with nan_poison():
        packed = sliding_window_attention(q, k, v, window, cu_seqlens=cu_seqlens_from(lengths))
    start = 0
    for n in lengths:
        sl = slice(start, start + n)
        ref = naive_sliding_window_attention(q[:, sl].to(F64), k[:, sl].to(F64), v[:, sl].to(F64), window)
        assert_close(f"segment at {start}", ref, packed[:, sl])
        start += n


@pytest.mark.parametrize("window", [0, -3, 2.5, None, True])
def test_invalid_window_names_the_argument(window):
    q, k, v = _qkv(0, 1, 8, 1, 1, 16)
    for fn in (sliding_window_attention, naive_sliding_window_attention):
        with pytest.raises(ValueError, match="window"):
            fn(q, k, v, window)
