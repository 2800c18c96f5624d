"""Lightning attention: naive == chunked == recurrent == step, state carry, varlen, fla cross-check, slopes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mixarch.ops
from mixarch.ops.lightning import (
    alibi_slopes,
    chunk_lightning_attention,
    lightning_attention,
    lightning_step,
    naive_lightning_attention,
    recurrent_lightning_attention,
)
from mixarch.testing.compare import assert_close, assert_close_rel
from mixarch.testing.poison import nan_poison
from mixarch.testing.strategies import compositions, cu_seqlens_from, seeded_randn, seeds

SEQ_LENS = (1, 15, 63, 64, 65, 200)
HEADS = (1, 3, 5, 6)
DIMS = (16, 32, 48)
CHUNKS = (16, 32, 64)
KNOBS = (0.0, 0.01, 0.1, 1.0, 5.0)  # constant slopes for every head; 0 = no decay
FP32_TOL = 2e-5  # fp32 vs fp64: rtol, and atol relative to the reference's largest magnitude


@dataclass(frozen=True)
class Problem:
    b: int
    t: int
    h: int
    dk: int
    dv: int
    decay: str | float  # "alibi" or a constant slope
    seed: int

    def slopes(self) -> torch.Tensor:
        if self.decay == "alibi":
            return alibi_slopes(self.h)
        return torch.full((self.h,), float(self.decay))

    def tensors(self, dtype=torch.float64, n_states: int | None = None):
        """q, k, v (dtype), h0, do, dht (fp64; callers cast). ``n_states`` rows of state (default B)."""
        n = self.b if n_states is None else n_states
        b, t, h, dk, dv, s = self.b, self.t, self.h, self.dk, self.dv, self.seed
        q = seeded_randn((b, t, h, dk), s, dtype=dtype)
        k = seeded_randn((b, t, h, dk), s + 1, dtype=dtype)
        v = seeded_randn((b, t, h, dv), s + 2, dtype=dtype)
        h0 = seeded_randn((n, h, dk, dv), s + 3)
        do = seeded_randn((b, t, h, dv), s + 4)
        dht = seeded_randn((n, h, dk, dv), s + 5)
        return q, k, v, h0, do, dht


@st.composite
def problems(draw, seq_lens=SEQ_LENS, batches=(1, 2)):
    return Problem(
        b=draw(st.sampled_from(batches)),
        t=draw(st.sampled_from(seq_lens)),
        h=draw(st.sampled_from(HEADS)),
        dk=draw(st.sampled_from(DIMS)),
        dv=draw(st.sampled_from(DIMS)),
        decay=draw(st.one_of(st.just("alibi"), st.sampled_from(KNOBS))),
        seed=draw(seeds),
    )


def _chunked(chunk_size):
    def fn(*args, **kwargs):
        return chunk_lightning_attention(*args, chunk_size=chunk_size, **kwargs)

    return fn


def run(fn, q, k, v, decay, h0, do, dht, **kwargs):
    """Forward + backward of ``(o * do).sum() + (ht * dht).sum()`` under NaN poisoning.

    Returns o, ht and the gradients of q, k, v, h0.
    """
    q, k, v, h0 = (x.detach().clone().requires_grad_(True) for x in (q, k, v, h0))
    with nan_poison():
        o, ht = fn(q, k, v, decay, initial_state=h0, output_final_state=True, **kwargs)
        loss = (o.double() * do).sum() + (ht.double() * dht).sum()
        loss.backward()
    return {"o": o.detach(), "ht": ht.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad, "dh0": h0.grad}


def assert_fp32_close(name, ref, out, tol=FP32_TOL):
    assert_close(name, ref, out, rtol=tol, atol=tol * max(1.0, ref.abs().max().item()))


def assert_all(results_ref, results, check, label):
    for key, ref in results_ref.items():
        check(f"{label}:{key}", ref, results[key])


FORMS = {
    "naive": naive_lightning_attention,
    "recurrent": recurrent_lightning_attention,
    "public": lightning_attention,
}


# --------------------------------------------------------------------------------------------------------------
# forms agree with the fp64 reference


@settings(max_examples=25, deadline=None)
@given(p=problems(), chunk=st.sampled_from(CHUNKS))
def test_forms_match_fp64_reference_fp32(p, chunk):
    q, k, v, h0, do, dht = p.tensors(torch.float64)
    ref = run(naive_lightning_attention, q, k, v, p.slopes().double(), h0, do, dht)
    assert ref["ht"].dtype == torch.float64 and ref["o"].dtype == torch.float64
    forms = {**FORMS, f"chunk{chunk}": _chunked(chunk)}
    for name, fn in forms.items():
        out = run(fn, q.float(), k.float(), v.float(), p.slopes(), h0.float(), do, dht)
        assert out["o"].dtype == torch.float32 and out["ht"].dtype == torch.float32
        assert_all(ref, out, assert_fp32_close, name)


@settings(max_examples=20, deadline=None)
@given(p=problems(), chunk=st.sampled_from(CHUNKS), dtype=st.sampled_from([torch.bfloat16, torch.float16]))
def test_forms_16bit_inputs_by_relative_rmse(p, chunk, dtype):
    q, k, v, h0, do, dht = p.tensors(dtype)
    do = do.to(dtype).double()  # o is 16-bit, so its gradient is: give the reference the same rounded one
    ref = run(naive_lightning_attention, q.double(), k.double(), v.double(), p.slopes().double(), h0, do, dht)
    forms = {**FORMS, f"chunk{chunk}": _chunked(chunk)}
    for name, fn in forms.items():
        out = run(fn, q, k, v, p.slopes(), h0.float(), do, dht)
        assert out["o"].dtype == dtype and out["ht"].dtype == torch.float32 and out["dq"].dtype == dtype
        # 16-bit tensors (o, dq, dk, dv) by the dtype's 5e-3; fp32 ones (ht, dh0) accumulate exact inputs: 1e-5
        assert_all(ref, out, assert_close_rel, name)


@settings(max_examples=20, deadline=None)
@given(p=problems(seq_lens=(15, 63, 64, 65, 200)), chunk=st.sampled_from((1, 7, *CHUNKS, 256)))
def test_chunk_sizes_agree_fp64(p, chunk):
    """Any chunk size (1, odd, larger than T) gives the reference to fp64 rounding."""
    q, k, v, h0, do, dht = p.tensors(torch.float64)
    ref = run(naive_lightning_attention, q, k, v, p.slopes().double(), h0, do, dht)
    out = run(_chunked(chunk), q, k, v, p.slopes().double(), h0, do, dht)
    assert_all(ref, out, assert_close, f"chunk{chunk}")


# --------------------------------------------------------------------------------------------------------------
# state carry, varlen, decode


@settings(max_examples=20, deadline=None)
@given(p=problems(), frac=st.floats(0.0, 1.0), chunk=st.sampled_from(CHUNKS))
def test_split_and_carry_state_equals_whole(p, frac, chunk):
    q, k, v, h0, _, _ = p.tensors(torch.float64)
    s = p.slopes().double()
    cut = round(frac * p.t)  # 0 and T included: an empty part passes the state through
    for name, fn in {**FORMS, f"chunk{chunk}": _chunked(chunk)}.items():
        with nan_poison():
            o, ht = fn(q, k, v, s, initial_state=h0, output_final_state=True)
            o1, h1 = fn(q[:, :cut], k[:, :cut], v[:, :cut], s, initial_state=h0, output_final_state=True)
            o2, h2 = fn(q[:, cut:], k[:, cut:], v[:, cut:], s, initial_state=h1, output_final_state=True)
        assert_close(f"{name}:o", o, torch.cat([o1, o2], dim=1))
        assert_close(f"{name}:ht", ht, h2)


@settings(max_examples=15, deadline=None)
@given(p=problems(batches=(1,)), data=st.data(), chunk=st.sampled_from(CHUNKS))
def test_varlen_equals_loop_over_sequences(p, data, chunk):
    lengths = data.draw(compositions(p.t, max_parts=5), label="lengths")
    cu = cu_seqlens_from(lengths)
    n = len(lengths)
    q, k, v, h0, do, dht = p.tensors(torch.float64, n_states=n)
    s = p.slopes().double()
    for name, fn in {**FORMS, f"chunk{chunk}": _chunked(chunk)}.items():
        packed = run(fn, q, k, v, s, h0, do, dht, cu_seqlens=cu)
        assert packed["ht"].shape == (n, p.h, p.dk, p.dv)
        parts = []
        for i, (a, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            parts.append(run(fn, q[:, a:e], k[:, a:e], v[:, a:e], s, h0[i:i + 1], do[:, a:e], dht[i:i + 1]))
        looped = {key: torch.cat([r[key] for r in parts], dim=0 if key in ("ht", "dh0") else 1) for key in parts[0]}
        assert_all(looped, packed, assert_close, name)


@settings(max_examples=20, deadline=None)
@given(p=problems(seq_lens=(1, 15, 65)), use_h0=st.booleans())
def test_step_repeated_equals_forward(p, use_h0):
    q, k, v, h0, _, _ = p.tensors(torch.float32)
    s = p.slopes()
    h0 = h0.float() if use_h0 else None
    ref_o, ref_ht = naive_lightning_attention(q.double(), k.double(), v.double(), s.double(),
                                              initial_state=None if h0 is None else h0.double(),
                                              output_final_state=True)
    with nan_poison():
        o, ht = lightning_attention(q, k, v, s, initial_state=h0, output_final_state=True)
        state, outs = h0, []
        for i in range(p.t):
            o_i, state = lightning_step(q[:, i:i + 1], k[:, i:i + 1], v[:, i:i + 1], s, state)
            assert o_i.shape == (p.b, 1, p.h, p.dv) and state.dtype == torch.float32
            outs.append(o_i)
    assert_fp32_close("step:o", ref_o, torch.cat(outs, dim=1))
    assert_fp32_close("step:ht", ref_ht, state)
    assert_fp32_close("forward:o", ref_o, o)
    assert_fp32_close("forward:ht", ref_ht, ht)


# --------------------------------------------------------------------------------------------------------------
# independent references


@settings(max_examples=15, deadline=None)
@given(p=problems(seq_lens=(1, 15, 65, 200)), chunk=st.sampled_from(CHUNKS))
def test_matches_fla_naive_simple_gla(p, chunk):
    """Lightning == simple GLA with log-decay ``g = -s`` per token (fla's own naive implementations)."""
    fla_naive = pytest.importorskip("fla.ops.simple_gla.naive")
    q, k, v, h0, _, _ = p.tensors(torch.float32)
    s = p.slopes()
    h0 = h0.float()
    scale = 0.7 * p.dk ** -0.5  # a non-default scale, passed to both
    g = (-s).expand(p.b, p.t, p.h).contiguous()
    ref_o, ref_ht = naive_lightning_attention(q.double(), k.double(), v.double(), s.double(), scale=scale,
                                              initial_state=h0.double(), output_final_state=True)
    fla_o, fla_ht = fla_naive.naive_recurrent_simple_gla(q, k, v, g, scale=scale, initial_state=h0.clone(),
                                                         output_final_state=True)
    fla_co, fla_cht = fla_naive.naive_chunk_simple_gla(q, k, v, g, initial_state=h0.clone(),
                                                       output_final_state=True, chunk_size=chunk, scale=scale)
    with nan_poison():
        o, ht = chunk_lightning_attention(q, k, v, s, scale=scale, initial_state=h0, output_final_state=True,
                                          chunk_size=chunk)
    for name, (ro, rh) in {"fla-recurrent": (fla_o, fla_ht), "fla-chunk": (fla_co, fla_cht)}.items():
        assert_fp32_close(f"{name}:o", ref_o, ro.to(torch.float32))
        assert_fp32_close(f"{name}:ht", ref_ht, rh)
        assert_fp32_close(f"{name}-vs-chunk:o", ro, o, tol=5e-5)
        assert_fp32_close(f"{name}-vs-chunk:ht", rh, ht, tol=5e-5)


@settings(max_examples=15, deadline=None)
@given(p=problems(seq_lens=(15, 65, 200)), chunk=st.sampled_from(CHUNKS))
def test_limits_no_decay_and_full_decay(p, chunk):
    """decay 0: plain causal linear attention (cumulative sum of k^T v); huge decay: o_t = scale (q_t.k_t) v_t."""
    q, k, v, h0, _, _ = p.tensors(torch.float64)
    scale = p.dk ** -0.5
    kv = torch.cumsum(torch.einsum("bthk,bthv->bthkv", k, v), dim=1) + h0[:, None]
    linear = scale * torch.einsum("bthk,bthkv->bthv", q, kv)
    local = scale * (q * k).sum(-1, keepdim=True) * v
    for s, ref_o, ref_ht in ((0.0, linear, kv[:, -1]), (800.0, local, torch.einsum("bhk,bhv->bhkv", k[:, -1],
                                                                                  v[:, -1]))):
        decay = torch.full((p.h,), s, dtype=torch.float64)
        for name, fn in {**FORMS, f"chunk{chunk}": _chunked(chunk)}.items():
            with nan_poison():
                o, ht = fn(q, k, v, decay, initial_state=h0, output_final_state=True)
            assert_close(f"{name}(s={s}):o", ref_o, o)
            assert_close(f"{name}(s={s}):ht", ref_ht, ht)


# --------------------------------------------------------------------------------------------------------------
# slopes, API, errors

P = [2.0 ** -(x / 4) for x in range(1, 33)]  # P[i] = 2^(-(i+1)/4)


def _pow2(e):
    return 2.0 ** -e


SLOPE_TABLES = {
    1: [_pow2(8)],
    2: [_pow2(4), _pow2(8)],
    3: [_pow2(4), _pow2(8), _pow2(2)],
    5: [_pow2(2), _pow2(4), _pow2(6), _pow2(8), _pow2(1)],
    6: [_pow2(2), _pow2(4), _pow2(6), _pow2(8), _pow2(1), _pow2(3)],
    8: [_pow2(e) for e in range(1, 9)],
    12: [_pow2(e) for e in range(1, 9)] + [_pow2(0.5), _pow2(1.5), _pow2(2.5), _pow2(3.5)],
    24: [_pow2(e / 2) for e in range(1, 17)] + [_pow2(0.25 + 0.5 * i) for i in range(8)],
    32: [_pow2(e / 4) for e in range(1, 33)],
}


@pytest.mark.parametrize("n_heads", sorted(SLOPE_TABLES))
def test_alibi_slopes_table(n_heads):
    got = alibi_slopes(n_heads)
    assert got.dtype == torch.float32 and got.shape == (n_heads,)
    assert_close(f"slopes[{n_heads}]", torch.tensor(SLOPE_TABLES[n_heads], dtype=torch.float64), got, rtol=0,
                 atol=0)


def test_alibi_slopes_sala_range():
    s = alibi_slopes(32)  # MiniCPM-SALA: s in [0.841 .. 0.0039], lambda in [0.43 .. 0.9961]
    assert abs(s[0].item() - 0.8409) < 1e-4 and abs(s[-1].item() - 0.00390625) < 1e-9
    assert abs(torch.exp(-s[-1]).item() - 0.9961) < 1e-4


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_alibi_slopes_rejects_bad_count(bad):
    with pytest.raises(ValueError, match="n_heads"):
        alibi_slopes(bad)


def test_exports_and_public_dispatch():
    assert mixarch.ops.lightning_attention is lightning_attention and mixarch.ops.alibi_slopes is alibi_slopes
    p = Problem(b=2, t=1, h=3, dk=16, dv=32, decay="alibi", seed=7)
    q, k, v, h0, _, _ = p.tensors(torch.float32)
    o, ht = lightning_attention(q, k, v, p.slopes())
    assert ht is None and o.shape == (2, 1, 3, 32) and o.dtype == torch.float32
    o_c, _ = chunk_lightning_attention(q, k, v, p.slopes())
    assert_close("T=1 dispatch", o_c, o)
    _, ht64 = lightning_attention(q.double(), k.double(), v.double(), p.slopes(), output_final_state=True)
    assert ht64.dtype == torch.float64 and ht64.shape == (2, 3, 16, 32)


def _args(b=1, t=4, h=3, dk=8, dv=6):
    return (torch.randn(b, t, h, dk), torch.randn(b, t, h, dk), torch.randn(b, t, h, dv), alibi_slopes(h))


def _with(index, value, **kw):
    args = list(_args(**kw))
    args[index] = value
    return args


BAD_CALLS = [
    ("q must be a \\[B, T, H, D\\]", _with(0, torch.randn(4, 3, 8)), {}),
    ("k must be a \\[B, T, H, D\\]", _with(1, torch.randn(1, 1, 4, 3, 8)), {}),
    ("k must have q's shape", _with(1, torch.randn(1, 4, 3, 9)), {}),
    ("v must be", _with(2, torch.randn(1, 5, 3, 6)), {}),
    ("share a dtype", _with(2, torch.randn(1, 4, 3, 6, dtype=torch.float64)), {}),
    ("decay must have shape", _with(3, torch.ones(4)), {}),
    ("decay must be a tensor", _with(3, 0.5), {}),
    ("decay must be finite and >= 0", _with(3, torch.tensor([0.1, -0.1, 0.2])), {}),
    ("decay must be finite and >= 0", _with(3, torch.tensor([0.1, float("inf"), 0.2])), {}),
    ("initial_state must have shape", _args(), {"initial_state": torch.zeros(1, 3, 6, 8)}),
    ("initial_state must have shape", _args(b=2), {"initial_state": torch.zeros(1, 3, 8, 6)}),
    ("cu_seqlens needs packed inputs with B == 1", _args(b=2), {"cu_seqlens": torch.tensor([0, 2, 4])}),
    ("cu_seqlens must start at 0 and end at T", _args(), {"cu_seqlens": torch.tensor([0, 2, 5])}),
    ("cu_seqlens must start at 0 and end at T", _args(), {"cu_seqlens": torch.tensor([1, 4])}),
    ("cu_seqlens must be non-decreasing", _args(), {"cu_seqlens": torch.tensor([0, 3, 2, 4])}),
    ("cu_seqlens must be an integer tensor", _args(), {"cu_seqlens": torch.tensor([0.0, 4.0])}),
    ("cu_seqlens must be a 1-D", _args(), {"cu_seqlens": torch.tensor([[0, 4]])}),
    ("initial_state must have shape", _args(),
     {"cu_seqlens": torch.tensor([0, 1, 4]), "initial_state": torch.zeros(1, 3, 8, 6)}),
    ("scale must be a float", _args(), {"scale": "0.5"}),
]


@pytest.mark.parametrize("form", ["naive", "chunk", "recurrent", "public"])
@pytest.mark.parametrize("match,args,kwargs", BAD_CALLS, ids=[f"{i}:{c[0][:30]}" for i, c in enumerate(BAD_CALLS)])
def test_bad_inputs_raise(form, match, args, kwargs):
    fn = {"chunk": chunk_lightning_attention, **FORMS}[form]
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_chunk_size_raises(bad):
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_lightning_attention(*_args(), chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        lightning_attention(*_args(t=1), chunk_size=bad)


def test_step_bad_inputs_raise():
    q, k, v, s = _args(t=1)
    with pytest.raises(ValueError, match="q must be a \\[B, 1, H, D\\]"):
        lightning_step(q[:, 0], k, v, s, None)
    with pytest.raises(ValueError, match="v must be a \\[B, 1, H, D\\]"):
        lightning_step(q, k, torch.randn(1, 2, 3, 6), s, None)
    with pytest.raises(ValueError, match="state must have shape"):
        lightning_step(q, k, v, s, torch.zeros(1, 3, 6, 8))
    with pytest.raises(ValueError, match="decay must be finite and >= 0"):
        lightning_step(q, k, v, -s, None)


def test_decay_values_are_checked_once_per_tensor_version():
    """A layer passes one decay tensor at every call: its values (a device sync) are checked again only after
    an in-place write."""
    import mixarch.ops.lightning._common as common

    q, k, v, s = _args(t=3)
    decay = s.clone()
    lightning_attention(q, k, v, decay)
    assert common._VALID_DECAY.get(decay) == decay._version
    decay[0] = -1.0  # bumps the version: checked again
    with pytest.raises(ValueError, match="decay must be finite and >= 0"):
        lightning_attention(q, k, v, decay)
    with pytest.raises(ValueError, match="decay must be finite and >= 0"):
        lightning_step(q[:, :1], k[:, :1], v[:, :1], decay, None)
