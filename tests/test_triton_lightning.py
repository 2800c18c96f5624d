"""Triton Lightning kernels, beyond the conformance suite: varlen with empty and length-1 sequences, initial-
and final-state gradients, chunk and segment boundaries, the decode step, prefill + decode, dispatch fallbacks
and ``torch.compile(fullgraph=True)``.

On a CPU machine these run only under ``TRITON_INTERPRET=1`` (set before Python starts), fp32 and tiny shapes.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

CUDA = torch.cuda.is_available()
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need CUDA, or TRITON_INTERPRET=1 on the CPU", allow_module_level=True)
pytest.importorskip("triton")

from mixarch.errors import MixarchError  # noqa: E402
from mixarch.kernels.dispatch import KERNELS_ENV, choose  # noqa: E402
from mixarch.kernels.triton.lightning import op  # noqa: E402
from mixarch.kernels.triton.lightning.chunk import CHUNK, chunk_bwd, chunk_fwd  # noqa: E402
from mixarch.ops.lightning import (  # noqa: E402
    alibi_slopes,
    lightning_attention,
    lightning_step,
    naive_lightning_attention,
    reference_lightning_step,
)
from mixarch.plugins import get_host  # noqa: E402
from mixarch.testing.compare import assert_close, assert_close_rel  # noqa: E402
from mixarch.testing.strategies import compositions, cu_seqlens_from, seeded_randn  # noqa: E402

#: gluon_sweep.WIDE (two warpgroups per program, or one), both compared bit for bit on GPUs
WIDE_IDS = ["one-warpgroup", "wide"]

DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16] if CUDA else [torch.float32]


def _inputs(b, t, h, dk, dv, n_states, seed, dtype=torch.float32, strength=1.0):
    q, k = (seeded_randn((b, t, h, dk), seed + i, dtype=dtype, device=DEVICE) for i in (0, 1))
    v = seeded_randn((b, t, h, dv), seed + 2, dtype=dtype, device=DEVICE)
    h0 = seeded_randn((n_states, h, dk, dv), seed + 3, device=DEVICE)
    return q, k, v, (alibi_slopes(h) * strength).to(DEVICE), h0


def _check(name, ref, out, dtype):
    if dtype == torch.float32:
        assert_close(name, ref, out.double(), rtol=2e-5, atol=2e-5 * ref.abs().max().item())
    else:
        assert_close_rel(name, ref, out)  # the tolerance follows out's dtype


def _reference_grads(q, k, v, decay, h0, cu_seqlens, do, dht):
    """fp64 naive reference: o, final state and the gradients of (o * do + ht * dht).sum() w.r.t. q, k, v, h0."""
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v, h0)]
    o, ht = naive_lightning_attention(*leaves[:3], decay, initial_state=leaves[3], output_final_state=True,
                                      cu_seqlens=cu_seqlens)
    grads = torch.autograd.grad((o * do.double()).sum() + (ht * dht.double()).sum(), leaves)
    return o.detach(), ht.detach(), grads


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lengths", [[1, 1, 1], [0, 5, 1, 0, 30], [1, 2 * CHUNK + 1, 1], [3 * CHUNK]])
def test_varlen_outputs_states_and_state_gradients(lengths, dtype):
    """Packed sequences (empty and length-1 included): o, final states and dq, dk, dv, dh0 against the fp64
    reference, with random upstream gradients for o and the final state."""
    t, h = sum(lengths), 2
    q, k, v, decay, h0 = _inputs(1, t, h, 16, 32, len(lengths), seed=t, dtype=dtype, strength=0.5)
    cu = cu_seqlens_from(lengths).to(DEVICE)
    leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    o, ht = op.lightning_attention(*leaves[:3], decay, initial_state=leaves[3], output_final_state=True,
                                   cu_seqlens=cu)
    do, dht = seeded_randn(o.shape, 7, device=DEVICE).to(dtype), seeded_randn(ht.shape, 8, device=DEVICE)
    grads = torch.autograd.grad((o.double() * do.double()).sum() + (ht * dht).sum(), leaves)
    ro, rht, rgrads = _reference_grads(q, k, v, decay, h0, cu, do, dht)
    # the fp32 states are accumulated from 16-bit dot products, so they carry the inputs' rounding
    _check("o", ro, o, dtype)
    _check("final state", rht, ht.to(dtype), dtype)
    for name, r, g in zip(("dq", "dk", "dv", "dh0"), rgrads, grads):
        _check(name, r, g if name != "dh0" else g.to(dtype), dtype)


@pytest.mark.parametrize("t", [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1, 4 * CHUNK + 3])
def test_chunk_and_segment_boundaries(t):
    """Segments of two chunks: every way T can fall around a chunk or segment edge, forward and backward."""
    b, h = 2, 2
    q, k, v, decay, h0 = _inputs(b, t, h, 16, 16, b, seed=3 * t)
    _check_chunk_kernels(q, k, v, decay, h0, f"T={t}")


def _check_chunk_kernels(q, k, v, decay, h0, label, scale=0.3):
    """Forward and backward of the chunk kernels (segments of two chunks) against the fp64 reference: o, final
    state, dq, dk, dv, dh0."""
    o, ht, enter = chunk_fwd(q, k, v, decay, h0, None, scale, CHUNK, 2 * CHUNK)
    do, dht = seeded_randn(o.shape, 5, device=DEVICE), seeded_randn(ht.shape, 6, device=DEVICE)
    grads = chunk_bwd(q, k, v, decay, enter, do, dht, None, scale, CHUNK, 2 * CHUNK)
    leaves = [x.double().requires_grad_() for x in (q, k, v, h0)]
    ro, rht = naive_lightning_attention(*leaves[:3], decay, scale=scale, initial_state=leaves[3],
                                        output_final_state=True)
    rgrads = torch.autograd.grad((ro * do.double()).sum() + (rht * dht.double()).sum(), leaves)
    for name, r, g in zip(("o", "final state", "dq", "dk", "dv", "dh0"), (ro, rht, *rgrads), (o, ht, *grads)):
        _check(f"{label} {name}", r.detach(), g, torch.float32)


#: per-token decays of four heads: the first two let whole chunks of a two-chunk segment underflow (weights
#: below 2^-160) in the state passes, the last two none (0: no decay)
STRONG_DECAY = [12.0, 8.0, 0.5, 0.0]


def _state_pass(a, b, decay, lay, scale, reverse, underflow, out=None):
    """``_segment_state``'s local states ``[n_slots, H, D, D]`` for ``lay`` (fp32 NaN-poisoned output)."""
    from mixarch.kernels.triton.lightning import chunk

    t, h, d = a.shape[1:]
    out = torch.full((lay.n_slots, h, d, d), float("nan"), device=DEVICE)
    chunk._segment_state[chunk._grid(d, lay, h)](
        a, b, decay, out, lay.slot_start, lay.slot_len, t, lay.n_seg, scale, H=h, DA=d, DB=d,
        BA=chunk._pad(d), TB=chunk._tile(d, chunk.STATE_TILE), C=CHUNK, SEG=lay.segment, REVERSE=reverse,
        VARLEN=lay.varlen, IEEE=chunk._ieee(a), UNDERFLOW=underflow)
    return out


def _skipped_rows(lay, t, decay, reverse):
    """``[B*T, H]`` mask of the rows that :func:`~mixarch.kernels.triton.lightning.chunk._weighted_chunks` skips,
    recomputed on the host: whole chunks whose weights' exponents ``m * s * log2(e)`` are all >= the cutoff."""
    import math

    from mixarch.kernels.triton.lightning.chunk import UNDERFLOW_LOG2

    mask = torch.zeros(lay.n_slots * lay.segment + t, len(decay), dtype=torch.bool)
    for j in range(lay.n_slots):
        g0 = j // lay.n_seg * t + j % lay.n_seg * lay.segment
        n = min(lay.segment, t - j % lay.n_seg * lay.segment)
        for hh, s in enumerate(decay.tolist()):
            for c0 in range(0, n, CHUNK):
                rows = range(c0, min(c0 + CHUNK, n))
                exps = [(i + 1 if reverse else n - 1 - i) * s * math.log2(math.e) for i in rows]
                if min(exps) >= UNDERFLOW_LOG2 + 1e-3:  # clear of the cutoff's rounding
                    mask[g0 + c0:g0 + c0 + len(rows), hh] = True
    return mask[:t * (lay.n_slots // lay.n_seg)]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_state_pass_skips_exactly_the_chunks_whose_weights_underflow(reverse):
    """The segment-state pass does not read the chunks whose decay weights are all below 2^-UNDERFLOW_LOG2 (exact
    zeros in fp32): its states equal, bit for bit, those of the pass that reads every chunk; with those chunks'
    rows poisoned with NaN they still do (so they are not read); and they match the fp64 sums."""
    from mixarch.kernels.triton.lightning import chunk
    from mixarch.kernels.triton.lightning.chunk import UNDERFLOW_LOG2

    b, h, d, scale = 2, len(STRONG_DECAY), 16, 0.3
    t = 5 * CHUNK + 3  # segments of two chunks: two full ones and a partial one per sequence
    a = seeded_randn((b, t, h, d), 41, device=DEVICE)
    v = seeded_randn((b, t, h, d), 42, device=DEVICE)
    decay = torch.tensor(STRONG_DECAY, device=DEVICE)
    lay = chunk.make_layout(b, t, None, 2 * CHUNK)
    every = _state_pass(a, v, decay, lay, scale, reverse, 0.0)
    skipping = _state_pass(a, v, decay, lay, scale, reverse, UNDERFLOW_LOG2)
    assert torch.equal(skipping, every)
    skipped = _skipped_rows(lay, t, decay.cpu(), reverse).view(b, t, h).to(DEVICE)
    assert skipped[:, :, 0].any() and skipped[:, :, 1].any() and not skipped[:, :, 2:].any()
    poisoned = [x.masked_fill(skipped[..., None], float("nan")) for x in (a, v)]
    assert torch.equal(_state_pass(*poisoned, decay, lay, scale, reverse, UNDERFLOW_LOG2), every)
    assert _state_pass(*poisoned, decay, lay, scale, reverse, 0.0)[:, :2].isnan().any()  # read when not skipped
    lam = torch.exp(-decay.double())
    for j in range(lay.n_slots):
        g0, n = j % lay.n_seg * lay.segment, min(lay.segment, t - j % lay.n_seg * lay.segment)
        i = torch.arange(n, device=DEVICE, dtype=torch.float64)
        w = scale * lam[:, None] ** (i + 1) if reverse else lam[:, None] ** (n - 1 - i)  # [H, n]
        seq = j // lay.n_seg
        ref = torch.einsum("nha,nhb,hn->hab", a[seq, g0:g0 + n].double(), v[seq, g0:g0 + n].double(), w)
        _check(f"slot {j}", ref, skipping[j], torch.float32)


def test_strong_decays_forward_and_backward():
    """Forward and backward through the chunk kernels with decays that make the state passes skip chunks (and no
    decay at all) match the fp64 reference: o, final state, dq, dk, dv, dh0."""
    b, h, t = 1, len(STRONG_DECAY), 6 * CHUNK + 5
    q, k, v, _, h0 = _inputs(b, t, h, 16, 16, b, seed=9)
    _check_chunk_kernels(q, k, v, torch.tensor(STRONG_DECAY, device=DEVICE), h0, "strong decays")


@pytest.mark.parametrize("with_state", [True, False])
def test_decode_step_matches_reference(with_state):
    q, k, v, decay, state = _inputs(3, 1, 2, 16, 32, 3, seed=11)
    state = state if with_state else None
    o, new_state = op.lightning_step(q, k, v, decay, state)
    ro, rstate = reference_lightning_step(q.double(), k.double(), v.double(), decay,
                                          None if state is None else state.double())
    _check("o", ro, o, torch.float32)
    _check("state", rstate, new_state, torch.float32)


def test_prefill_then_decode_equals_full_forward():
    t, steps = 2 * CHUNK + 3, 3
    q, k, v, decay, _ = _inputs(2, t + steps, 2, 16, 16, 2, seed=21)
    o_full, ht_full = op.lightning_attention(q, k, v, decay, output_final_state=True)
    _, state = op.lightning_attention(q[:, :t], k[:, :t], v[:, :t], decay, output_final_state=True)
    outs = []
    for i in range(t, t + steps):
        o_i, state = op.lightning_step(q[:, i:i + 1], k[:, i:i + 1], v[:, i:i + 1], decay, state)
        outs.append(o_i)
    assert_close("decoded o", o_full[:, t:], torch.cat(outs, dim=1), rtol=1e-5, atol=1e-5)
    assert_close("state", ht_full, state, rtol=1e-5, atol=1e-5)


def test_single_token_takes_the_step_kernel_without_gradients():
    q, k, v, decay, h0 = _inputs(2, 1, 2, 16, 16, 2, seed=31)
    ref = naive_lightning_attention(q.double(), k.double(), v.double(), decay, initial_state=h0.double(),
                                    output_final_state=True)
    with torch.no_grad():
        fast = op.lightning_attention(q, k, v, decay, initial_state=h0, output_final_state=True)
    q.requires_grad_()
    chunked = op.lightning_attention(q, k, v, decay, initial_state=h0, output_final_state=True)
    for got in (fast, chunked):
        _check("o", ref[0], got[0], torch.float32)
        _check("state", ref[1], got[1], torch.float32)


def test_dispatch_prefers_triton_on_cuda_and_falls_back_to_the_reference():
    q, k, v, decay, _ = _inputs(1, 8, 2, 16, 16, 1, seed=41)
    assert choose("lightning_attention", q, k, v, decay).backend == ("triton" if CUDA else "reference")
    assert choose("lightning_step", q[:, :1], k[:, :1], v[:, :1], decay, None).backend == (
        "triton" if CUDA else "reference")
    wide = torch.randn(1, 8, 2, 2 * op.MAX_HEAD_DIM, device=DEVICE)
    for args in ((q.double(), k.double(), v.double(), decay),  # fp64
                 (wide, wide, v, decay),  # Dk > 128
                 (q, k, v, decay.clone().requires_grad_())):  # a learnable decay
        assert choose("lightning_attention", *args).backend == "reference"
        assert op.unsupported_attention(*args) is not None


def test_unsupported_inputs_are_reported(monkeypatch):
    q, k, v, decay, _ = _inputs(1, 8, 2, 16, 16, 1, seed=51)
    with pytest.raises(MixarchError, match=r"lightning_attention\[triton\].*dtypes"):  # called directly
        op.lightning_attention(q.double(), k.double(), v.double(), decay)
    with pytest.raises(MixarchError, match="one token"):
        op.lightning_step(q, k, v, decay, None)
    monkeypatch.setenv(KERNELS_ENV, "triton")
    with pytest.raises(MixarchError, match="does not support these inputs"):  # forced, through the dispatcher
        lightning_attention(q.double(), k.double(), v.double(), decay)
    with pytest.raises(ValueError, match="decay must be finite and >= 0"):  # the reference's validation
        lightning_attention(q, k, v, -decay)


def test_compile_fullgraph_through_the_public_ops(monkeypatch):
    """One graph through the dispatcher and the custom ops, forward and backward, and the decode step."""
    monkeypatch.setenv(KERNELS_ENV, "triton")
    get_host()  # the plugin host is built eagerly, outside the traced region
    q, k, v, decay, h0 = _inputs(1, CHUNK + 5, 2, 16, 16, 2, seed=61)
    cu = torch.tensor([0, 3, CHUNK + 5], dtype=torch.int32, device=DEVICE)

    def loss(q, k, v, h0):
        o, ht = lightning_attention(q, k, v, decay, initial_state=h0, output_final_state=True, cu_seqlens=cu)
        return (o * o).sum() + ht.sum()

    def step(q, k, v, state):
        return lightning_step(q, k, v, decay, state)

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    eager_leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    compiled_leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    want = torch.autograd.grad(loss(*eager_leaves), eager_leaves)
    got = torch.autograd.grad(compiled(*compiled_leaves), compiled_leaves)
    for name, w, g in zip(("dq", "dk", "dv", "dh0"), want, got):
        assert_close(name, w, g, rtol=1e-6, atol=1e-6)
    one = [x[:, :1] for x in (q, k, v)]
    for w, g in zip(step(*one, h0[:1]), torch.compile(step, backend="eager", fullgraph=True)(*one, h0[:1])):
        assert_close("step", w, g, rtol=1e-6, atol=1e-6)


def test_eager_calls_launch_directly_and_match_the_custom_ops(monkeypatch):
    """Eager forward + backward launch the kernels themselves (no wrap_triton: its eager dispatch cost ~4x the
    kernels at 4K tokens) and give exactly the custom ops' results, final-state and initial-state gradients
    included."""
    from mixarch.kernels.triton.lightning import chunk

    launches = []
    launcher = chunk.launcher
    monkeypatch.setattr(chunk, "launcher", lambda kernel, direct: launches.append(direct) or launcher(kernel, direct))
    q, k, v, decay, h0 = _inputs(1, CHUNK + 7, 2, 16, 16, 1, seed=71)
    do, dht = torch.randn_like(v), torch.randn_like(h0)
    args = (decay.float(), None, None, 16 ** -0.5, CHUNK, chunk.segment_size(CHUNK + 7, 2))

    def run(fn):
        leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
        o, ht = fn(leaves)
        return (o, ht, *torch.autograd.grad((o * do).sum() + (ht * dht).sum(), leaves))

    launches.clear()
    eager = run(lambda x: op.lightning_attention(*x[:3], decay, initial_state=x[3], output_final_state=True))
    assert launches and all(launches), launches
    launches.clear()
    ops = run(lambda x: op._fwd_op(*x[:3], args[0], x[3], *args[2:])[:2])
    assert launches and not any(launches), launches
    for name, want, got in zip(("o", "ht", "dq", "dk", "dv", "dh0"), ops, eager):
        assert torch.equal(want, got), name


def test_tracing_sees_the_custom_ops():
    """Under make_fx (a dispatch mode) forward and backward trace as the custom ops, never as baked-in
    launches."""
    from torch.fx.experimental.proxy_tensor import make_fx

    q, k, v, decay, _ = _inputs(1, 9, 2, 16, 16, 1, seed=81)

    def loss(q, k, v):
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        o, _ = op.lightning_attention(*leaves, decay)
        return torch.autograd.grad(o.sum(), leaves)

    op.lightning_attention(q, k, v, decay)  # validates decay's values once (a host read, not traceable)
    code = make_fx(loss)(q, k, v).code
    assert "triton_lightning_fwd" in code and "triton_lightning_bwd" in code, code


def test_gluon_sweep_is_taken_only_where_it_was_written_for(monkeypatch):
    """The Gluon sweep needs a Hopper GPU, direct launches, long inputs, 16-bit inputs, Dk = 128 and Dv a
    multiple of 64; everything else (the interpreter, short inputs, fp32, other head dims, other chunks) stays on
    ``_chunk_fwd``."""
    from mixarch.kernels.triton.lightning import chunk, gluon_sweep

    q, k, v, _, _ = _inputs(1, CHUNK + 3, 2, 128, 64, 1, seed=91, dtype=torch.bfloat16 if CUDA else torch.float32)
    tile = chunk._tile(64, chunk.STATE_TILE)
    assert not gluon_sweep.ready(q, k, v, CHUNK, tile)  # 134 token-heads: short
    monkeypatch.setattr(gluon_sweep, "MIN_TOKEN_HEADS", 0)
    hopper = CUDA and torch.cuda.get_device_capability()[0] == 9 and gluon_sweep.gluon is not None
    assert gluon_sweep.ready(q, k, v, CHUNK, tile) == (hopper and os.environ.get("TRITON_INTERPRET") != "1")
    assert not gluon_sweep.ready(q.float(), k.float(), v.float(), CHUNK, tile)
    assert not gluon_sweep.ready(q[..., :64].contiguous(), k[..., :64].contiguous(), v, CHUNK, tile)
    assert not gluon_sweep.ready(q, k, v, CHUNK // 2, tile)


@pytest.mark.parametrize("broken", ["gluon_sweep.sweep", "gluon_sweep.sweep_bwd", "gluon_state.segment_states"])
def test_gluon_kernel_that_does_not_compile_falls_back_with_a_warning(monkeypatch, broken):
    """A Triton whose Gluon cannot compile a Gluon kernel (an API change) gets the Triton kernels, the same
    forward and backward results, a warning naming the Triton version, and no second attempt: a failing sweep,
    backward sweep or state pass turns every Gluon kernel off."""
    from triton.compiler.errors import CompilationError

    from mixarch.kernels.triton.lightning import gluon_state, gluon_sweep

    q, k, v, decay, h0 = _inputs(1, CHUNK + 5, 2, 16, 16, 1, seed=97)
    do = seeded_randn(v.shape, 99, device=DEVICE)

    def both():
        o, ht, enter = chunk_fwd(q, k, v, decay, h0, None, 0.3, CHUNK, 2 * CHUNK, direct=True)
        return (o, ht, enter, *chunk_bwd(q, k, v, decay, enter, do, None, None, 0.3, CHUNK, 2 * CHUNK, direct=True))

    want = both()
    calls = []

    def fails(*args):
        calls.append(args)
        raise CompilationError("def _sweep(): ...", None, "unsupported layout")

    module, name = broken.split(".")
    monkeypatch.setattr(gluon_sweep, "ENABLED", True)
    monkeypatch.setattr(gluon_sweep, "ready", lambda *args: gluon_sweep.ENABLED)
    state_ready = module == "gluon_state"  # only the kernel under test is reached while Gluon is on
    monkeypatch.setattr(gluon_state, "ready", lambda *args: state_ready and gluon_sweep.ENABLED)
    if name == "sweep_bwd":  # the forward's sweep, reached first, stands aside
        monkeypatch.setattr(gluon_sweep, "try_sweep", lambda *args: None)
    monkeypatch.setattr(gluon_sweep if module == "gluon_sweep" else gluon_state, name, fails)
    with pytest.warns(RuntimeWarning, match="does not compile with Triton .*unsupported layout"):
        got = both()
    assert not gluon_sweep.ENABLED
    again = both()
    assert len(calls) == 1
    for label, a, b, c in zip(("o", "final state", "entering states", "dq", "dk", "dv", "dh0"), want, got, again):
        assert torch.equal(a, b) and torch.equal(a, c), label


@pytest.mark.skipif(not CUDA, reason="Gluon kernels need a CUDA GPU (there is no Gluon interpreter)")
@pytest.mark.parametrize("wide", [False, True], ids=WIDE_IDS)
@pytest.mark.parametrize("dv", [64, 128])
@pytest.mark.parametrize("case", ["dense", "varlen"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gluon_sweep_equals_the_triton_sweep(monkeypatch, dtype, case, dv, wide):
    """On a Hopper GPU the Gluon sweep gives ``_chunk_fwd``'s o bit for bit (same tiles, same matmuls), with
    partial chunks and segments, batches, packed sequences (empty and length-1 ones) and initial states; and o
    matches the fp64 reference; with one or two warpgroups per program (:data:`~.gluon_sweep.WIDE`; ``Dv = 64``
    keeps one)."""
    from mixarch.kernels.triton.lightning import chunk, gluon_sweep

    if torch.cuda.get_device_capability()[0] != 9 or gluon_sweep.gluon is None:
        pytest.skip("the Gluon sweep is for compute capability 9.x with Gluon available")
    monkeypatch.setattr(gluon_sweep, "WIDE", wide)
    h, scale = 3, 0.3
    if case == "dense":
        b, lengths = 2, None
        t = 5 * CHUNK + 17
    else:
        b, lengths = 1, [1, 0, 3 * CHUNK + 5, CHUNK, 2 * CHUNK - 1, 1]
        t = sum(lengths)
    cu = None if lengths is None else cu_seqlens_from(lengths).to(DEVICE)
    q, k, v, decay, h0 = _inputs(b, t, h, 128, dv, b if cu is None else len(lengths), seed=t + dv, dtype=dtype,
                                 strength=0.5)
    monkeypatch.setattr(gluon_sweep, "MIN_TOKEN_HEADS", 0)  # these shapes are short
    outs = {}
    for enabled in (True, False):
        monkeypatch.setattr(gluon_sweep, "ENABLED", enabled)
        assert gluon_sweep.ready(q, k, v, CHUNK, chunk._tile(dv, chunk.STATE_TILE)) == enabled
        outs[enabled] = chunk_fwd(q, k, v, decay, h0, cu, scale, CHUNK, 2 * CHUNK, direct=True)
    for name, got, want in zip(("o", "final state"), outs[True], outs[False]):  # (entering states: one code path)
        assert torch.equal(got, want), name
    ro = naive_lightning_attention(q.double(), k.double(), v.double(), decay, scale=scale,
                                   initial_state=h0.double(), cu_seqlens=cu)[0]
    _check("o", ro, outs[True][0], dtype)


@pytest.mark.skipif(not CUDA, reason="Gluon kernels need a CUDA GPU (there is no Gluon interpreter)")
@pytest.mark.parametrize("wide", [False, True], ids=WIDE_IDS)
@pytest.mark.parametrize("case", ["dense", "varlen"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gluon_backward_equals_the_triton_backward(monkeypatch, dtype, case, wide):
    """On a Hopper GPU the Gluon sweeps of the backward (dq forward from the entering states; dk, dv backward
    from the state gradients) give the Triton kernels' dq, dk, dv bit for bit, and match the fp64 reference;
    with one or two warpgroups per program."""
    from mixarch.kernels.triton.lightning import gluon_sweep

    if torch.cuda.get_device_capability()[0] != 9 or gluon_sweep.gluon is None:
        pytest.skip("the Gluon sweeps are for compute capability 9.x with Gluon available")
    monkeypatch.setattr(gluon_sweep, "MIN_TOKEN_HEADS", 0)
    monkeypatch.setattr(gluon_sweep, "WIDE", wide)
    h, scale = 3, 0.3
    lengths = None if case == "dense" else [1, 0, 3 * CHUNK + 5, CHUNK, 2 * CHUNK - 1, 1]
    b, t = (2, 5 * CHUNK + 17) if lengths is None else (1, sum(lengths))
    cu = None if lengths is None else cu_seqlens_from(lengths).to(DEVICE)
    q, k, v, decay, h0 = _inputs(b, t, h, 128, 128, b if cu is None else len(lengths), seed=t + 7, dtype=dtype,
                                 strength=0.5)
    do = seeded_randn(v.shape, 17, device=DEVICE).to(dtype)
    dht = seeded_randn(h0.shape, 18, device=DEVICE)
    outs = {}
    for enabled in (True, False):
        monkeypatch.setattr(gluon_sweep, "ENABLED", enabled)
        enter = chunk_fwd(q, k, v, decay, h0, cu, scale, CHUNK, 2 * CHUNK, direct=True)[2]
        outs[enabled] = chunk_bwd(q, k, v, decay, enter, do, dht, cu, scale, CHUNK, 2 * CHUNK, direct=True)
    for name, got, want in zip(("dq", "dk", "dv", "dh0"), outs[True], outs[False]):
        assert torch.equal(got, want), name
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v, h0)]
    ro, rht = naive_lightning_attention(*leaves[:3], decay, scale=scale, initial_state=leaves[3],
                                        output_final_state=True, cu_seqlens=cu)
    rgrads = torch.autograd.grad((ro * do.double()).sum() + (rht * dht.double()).sum(), leaves)
    for name, r, g in zip(("dq", "dk", "dv"), rgrads, outs[True]):
        _check(name, r, g, dtype)


@pytest.mark.skipif(not CUDA, reason="Gluon kernels need a CUDA GPU (there is no Gluon interpreter)")
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("case", ["dense", "varlen"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gluon_segment_states_equal_the_triton_pass(monkeypatch, dtype, case, reverse):
    """On a Hopper GPU the Gluon state pass gives ``_segment_state``'s local states bit for bit (k, v forward;
    q, do backward), with partial chunks and segments, batches and packed sequences (empty and length-1 ones),
    and they match the fp64 sums."""
    from mixarch.kernels.triton.lightning import chunk, gluon_state, gluon_sweep

    if torch.cuda.get_device_capability()[0] != 9 or gluon_sweep.gluon is None:
        pytest.skip("the Gluon state pass is for compute capability 9.x with Gluon available")
    monkeypatch.setattr(gluon_sweep, "MIN_TOKEN_HEADS", 0)
    h, scale, segment = 3, 0.3, 2 * CHUNK
    lengths = None if case == "dense" else [1, 0, 3 * CHUNK + 5, CHUNK, 2 * CHUNK - 1, 1]
    b, t = (2, 5 * CHUNK + 17) if lengths is None else (1, sum(lengths))
    cu = None if lengths is None else cu_seqlens_from(lengths).to(DEVICE)
    a, _, v, decay, _ = _inputs(b, t, h, 128, 128, 1, seed=t + 11, dtype=dtype, strength=0.5)
    lay = chunk.make_layout(b, t, cu, segment)
    assert gluon_state.ready(a, v, CHUNK)
    got = gluon_state.segment_states(a, v, decay, lay, scale, reverse, chunk.UNDERFLOW_LOG2)
    want = _state_pass(a, v, decay, lay, scale, reverse, chunk.UNDERFLOW_LOG2)
    assert torch.equal(got, want)
    starts = lay.slot_start.tolist() if lay.varlen else [i // lay.n_seg * t + i % lay.n_seg * segment
                                                         for i in range(lay.n_slots)]
    lens = lay.slot_len.tolist() if lay.varlen else [min(segment, t - i % lay.n_seg * segment)
                                                     for i in range(lay.n_slots)]
    flat_a, flat_b = a.reshape(b * t, h, 128).double(), v.reshape(b * t, h, 128).double()
    lam = torch.exp(-decay.double())
    for j, (g0, n) in enumerate(zip(starts, lens)):
        i = torch.arange(n, device=DEVICE, dtype=torch.float64)
        w = scale * lam[:, None] ** (i + 1) if reverse else lam[:, None] ** (n - 1 - i)  # [H, n]
        ref = torch.einsum("nha,nhb,hn->hab", flat_a[g0:g0 + n], flat_b[g0:g0 + n], w)
        if n:
            assert_close_rel(f"slot {j}", ref, got[j].to(dtype))
        else:
            assert torch.equal(got[j], torch.zeros_like(got[j])), f"slot {j}: empty, not zeros"


@pytest.mark.skipif(not CUDA, reason="Gluon kernels need a CUDA GPU (there is no Gluon interpreter)")
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gluon_state_pass_skips_the_chunks_the_triton_pass_skips(monkeypatch, dtype, reverse):
    """With decays whose weights underflow over whole chunks, the Gluon state pass skips the same chunks: its
    states equal the Triton pass's with and without skipping, bit for bit, also with those chunks poisoned."""
    from mixarch.kernels.triton.lightning import chunk, gluon_state, gluon_sweep

    if torch.cuda.get_device_capability()[0] != 9 or gluon_sweep.gluon is None:
        pytest.skip("the Gluon state pass is for compute capability 9.x with Gluon available")
    monkeypatch.setattr(gluon_sweep, "MIN_TOKEN_HEADS", 0)
    b, h, t, scale = 2, len(STRONG_DECAY), 5 * CHUNK + 3, 0.3
    a = seeded_randn((b, t, h, 128), 43, device=DEVICE).to(dtype)
    v = seeded_randn((b, t, h, 128), 44, device=DEVICE).to(dtype)
    decay = torch.tensor(STRONG_DECAY, device=DEVICE)
    lay = chunk.make_layout(b, t, None, 2 * CHUNK)
    every = _state_pass(a, v, decay, lay, scale, reverse, 0.0)
    assert torch.equal(gluon_state.segment_states(a, v, decay, lay, scale, reverse, 0.0), every)
    skipped = _skipped_rows(lay, t, decay.cpu(), reverse).view(b, t, h).to(DEVICE)
    assert skipped[:, :, :2].any()
    poisoned = [x.masked_fill(skipped[..., None], float("nan")) for x in (a, v)]
    got = gluon_state.segment_states(*poisoned, decay, lay, scale, reverse, chunk.UNDERFLOW_LOG2)
    assert torch.equal(got, every)


#: a fresh process whose first backward (on the autograd engine's worker thread) begins with a launch of a Gluon
#: kernel already loaded on the main thread (loading a kernel binds the context; launching one does not)
FIRST_BACKWARD = r"""
import torch
from mixarch.kernels.triton.lightning import gluon_sweep
from mixarch.kernels.triton.lightning.chunk import CHUNK, chunk_bwd, chunk_fwd, segment_size
from mixarch.ops.lightning import alibi_slopes, lightning_attention

gluon_sweep.MIN_TOKEN_HEADS = 0
q, k, v, do = (torch.randn(1, 256, 2, 128, device="cuda", dtype=torch.bfloat16) for _ in range(4))
decay, scale, seg = alibi_slopes(2).cuda(), 128 ** -0.5, segment_size(256, 2)
enter = chunk_fwd(q, k, v, decay, None, None, scale, CHUNK, seg, direct=True)[2]
chunk_bwd(q, k, v, decay, enter, do, None, None, scale, CHUNK, seg, direct=True)  # loaded on this thread
leaves = [x.requires_grad_() for x in (q, k, v)]
o = lightning_attention(*leaves, decay)[0]
grads = torch.autograd.grad(o, leaves, do)
assert gluon_sweep.ENABLED and all(torch.isfinite(g).all().item() for g in grads)
print("ok")
"""


@pytest.mark.skipif(not CUDA, reason="Gluon kernels need a CUDA GPU (there is no Gluon interpreter)")
def test_backward_whose_first_cuda_work_is_a_gluon_launch():
    """The autograd engine runs a backward on its own thread; when the first CUDA work there is a launch with
    host-side TMA descriptors, its context must be made current first (``bind_context``), or Triton fails to
    encode them ("invalid device context")."""
    import subprocess
    import sys

    from mixarch.kernels.triton.lightning import gluon_sweep

    if torch.cuda.get_device_capability()[0] != 9 or gluon_sweep.gluon is None:
        pytest.skip("the Gluon kernels are for compute capability 9.x with Gluon available")
    run = subprocess.run([sys.executable, "-c", FIRST_BACKWARD], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]


@pytest.mark.skipif(not CUDA, reason="Gluon kernels need a CUDA GPU (there is no Gluon interpreter)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@given(data=st.data())
def test_gluon_sweeps_conform_on_hypothesis_shapes(dtype, data):
    """Property test of the Gluon path with its length threshold lifted: drawn lengths around chunk and segment
    edges, batches or packed sequences (length 1 included), Dv 64 or 128, decay strengths, initial states. The
    Gluon forward and backward must be taken, give the Triton kernels' o, final state, dq, dk, dv, dh0 bit for
    bit, and match the fp64 reference."""
    from mixarch.kernels.triton.lightning import gluon_sweep

    if torch.cuda.get_device_capability()[0] != 9 or gluon_sweep.gluon is None:
        pytest.skip("the Gluon sweeps are for compute capability 9.x with Gluon available")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    t = data.draw(st.sampled_from([1, 15, 63, 64, 65, 127, 129, 200, 1000]), label="T")
    dv = data.draw(st.sampled_from([64, 128]), label="Dv")
    h = data.draw(st.sampled_from([1, 3]), label="H")
    varlen = data.draw(st.booleans(), label="varlen") and t > 1
    lengths = data.draw(compositions(t), label="lengths") if varlen else None
    b = 1 if varlen else data.draw(st.sampled_from([1, 2]), label="B")
    segment = data.draw(st.sampled_from([CHUNK, 2 * CHUNK, 4 * CHUNK]), label="segment")
    strength = data.draw(st.sampled_from([0.1, 1.0, 4.0, 512.0]), label="decay strength")
    wide = data.draw(st.booleans(), label="two warpgroups per program")
    cu = None if lengths is None else cu_seqlens_from(lengths).to(DEVICE)
    n = b if cu is None else len(lengths)
    q, k, v, decay, h0 = _inputs(b, t, h, 128, dv, n, seed, dtype=dtype, strength=strength)
    do = seeded_randn(v.shape, seed + 5, device=DEVICE).to(dtype)
    dht = seeded_randn(h0.shape, seed + 6, device=DEVICE)
    taken = []
    outs = {}
    saved = (gluon_sweep.MIN_TOKEN_HEADS, gluon_sweep.ENABLED, gluon_sweep.sweep, gluon_sweep.sweep_bwd,
             gluon_sweep.WIDE)
    try:
        gluon_sweep.MIN_TOKEN_HEADS, gluon_sweep.WIDE = 0, wide
        gluon_sweep.sweep = lambda *a: taken.append("fwd") or saved[2](*a)
        gluon_sweep.sweep_bwd = lambda *a: taken.append("bwd") or saved[3](*a)
        for enabled in (True, False):
            gluon_sweep.ENABLED = enabled
            o, ht, enter = chunk_fwd(q, k, v, decay, h0, cu, 0.3, CHUNK, segment, direct=True)
            grads = chunk_bwd(q, k, v, decay, enter, do, dht, cu, 0.3, CHUNK, segment, direct=True)
            outs[enabled] = (o, ht, *grads)
    finally:
        (gluon_sweep.MIN_TOKEN_HEADS, gluon_sweep.ENABLED, gluon_sweep.sweep, gluon_sweep.sweep_bwd,
         gluon_sweep.WIDE) = saved
    assert taken == ["fwd"] + (["bwd"] if dv == 128 else [])  # the backward's sweeps need Dk = Dv
    names = ("o", "final state", "dq", "dk", "dv", "dh0")
    for name, got, want in zip(names, outs[True], outs[False]):
        assert torch.equal(got, want), name
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v, h0)]
    ro, rht = naive_lightning_attention(*leaves[:3], decay, scale=0.3, initial_state=leaves[3],
                                        output_final_state=True, cu_seqlens=cu)
    rgrads = torch.autograd.grad((ro * do.double()).sum() + (rht * dht.double()).sum(), leaves)
    for name, r, g in zip(names, (ro, rht, *rgrads), outs[True]):
        # the fp32 states are accumulated from 16-bit dot products, so they carry the inputs' rounding
        _check(name, r.detach(), g.to(dtype), dtype)


def test_segment_size_on_a_gpu(monkeypatch):
    """The compiled kernels' segments: about 256 (segment, head) programs, powers of two from 256 to 16384 tokens
    (the interpreter's are two chunks)."""
    from mixarch.kernels.triton.lightning import chunk

    monkeypatch.setattr(chunk, "interpreting", lambda: False)
    sizes = {t: chunk.segment_size(t, 32, 64) for t in (100, 4096, 16384, 32768, 65536, 131072, 1 << 20)}
    assert sizes == {100: 256, 4096: 512, 16384: 2048, 32768: 4096, 65536: 8192, 131072: 16384, 1 << 20: 16384}
    assert chunk.segment_size(131072, 1, 64) == 512 and chunk.segment_size(300, 2, 512) == 512
