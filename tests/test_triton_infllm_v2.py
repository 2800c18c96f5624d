"""InfLLM-V2 Triton backends beyond the conformance recipes: the whole op through dispatch, chunked prefill and
decode against a cache, the G = 16 tile, the fall-through to the reference, ``torch.compile``.

Runs on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (tiny fp32 shapes); skipped otherwise.
"""

from __future__ import annotations

import pytest
import torch

from mixarch.kernels import KERNELS_ENV, choose
from mixarch.kernels.triton import interpreting
from mixarch.ops.infllm_v2 import CompressedKeyCache, infllm_v2_attention
from mixarch.plugins import get_host
from mixarch.testing.compare import assert_close_rel
from mixarch.testing.conformance import Case
from mixarch.testing.conformance.infllm_v2 import check_selection
from mixarch.testing.strategies import seeded_randn

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.skipif(not (CUDA or interpreting()), reason="needs CUDA or TRITON_INTERPRET=1"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning"),  # interpreter, log2(0)
]
DEVICE = "cuda" if CUDA else "cpu"
TRITON = "infllm_v2_select=triton,infllm_v2_sparse_attention=triton"
REFERENCE = "infllm_v2_select=reference,infllm_v2_sparse_attention=reference"
# tiny SALA-like geometry: block 4 * stride, C1 window 2 * stride, sparse from the first key
GEO = dict(block_size=8, kernel_size=4, kernel_stride=2, init_blocks=1, local_blocks=1, topk=3, dense_len=0)


def _qkv(t: int, hkv: int, group: int, d: int, seed: int, t_q: int | None = None):
    t_q = t if t_q is None else t_q
    return (seeded_randn((1, t_q, hkv * group, d), seed, device=DEVICE),
            seeded_randn((1, t, hkv, d), seed + 1, device=DEVICE),
            seeded_randn((1, t, hkv, d), seed + 2, device=DEVICE))


def _run(monkeypatch, kernels: str, q, k, v, **kw):
    monkeypatch.setenv(KERNELS_ENV, kernels)
    return infllm_v2_attention(q, k, v, return_indices=True, **{**GEO, **kw})


def _same_selection(got: torch.Tensor, want: torch.Tensor, q, k, exact: bool) -> None:
    """Equal indices up to near-ties (the conformance check, on the op's own compressed keys)."""
    from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

    ks, st = GEO["kernel_size"], GEO["kernel_stride"]
    c2 = None if exact else compress_keys(k, C2_FACTOR * ks, C2_FACTOR * st)
    kw = {n: GEO[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks")}
    case = Case(args=(q, compress_keys(k, ks, st), c2, k.shape[1]),
                kwargs=dict(**kw, scale=q.shape[-1] ** -0.5, exact_normalizer=exact))
    check_selection(case, {"indices": got}, {"indices": want})


@pytest.mark.parametrize("exact", [True, False])
def test_attention_matches_reference(monkeypatch, exact):
    """Stage 1 + selection + stage 2 through the dispatcher: outputs and gradients of q, k, v."""
    q, k, v = _qkv(40, 2, 2, 16, seed=7)
    outs = {}
    for name, kernels in (("triton", TRITON), ("reference", REFERENCE)):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        o, idx = _run(monkeypatch, kernels, *leaves, exact_normalizer=exact)
        (o * torch.linspace(-1, 1, o.numel(), device=DEVICE).view_as(o)).sum().backward()
        outs[name] = (o, idx, [x.grad for x in leaves])
    (o, idx, grads), (o_ref, idx_ref, grads_ref) = outs["triton"], outs["reference"]
    _same_selection(idx, idx_ref, q, k, exact)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_chunked_prefill_and_decode_match_prefill(monkeypatch):
    """Later queries against a longer cache (Tq < Tk, split kernels for Tq = 1) equal the prefill's rows."""
    t = 45
    q, k, v = _qkv(t, 2, 2, 16, seed=11)
    monkeypatch.setenv(KERNELS_ENV, REFERENCE)
    full, idx_full = infllm_v2_attention(q, k, v, exact_normalizer=False, return_indices=True, **GEO)
    monkeypatch.setenv(KERNELS_ENV, TRITON)
    for start in (30, 44):  # a chunk of 15 queries, then one decode step
        cache = CompressedKeyCache.from_keys(k, kernel_size=GEO["kernel_size"], kernel_stride=GEO["kernel_stride"])
        o, idx = infllm_v2_attention(q[:, start:], k, v, exact_normalizer=False, return_indices=True,
                                     compressed_k=cache.c1, compressed_k2=cache.c2, **GEO)
        _same_selection(idx, idx_full[:, :, start:], q[:, start:], k, exact=False)
        torch.testing.assert_close(o, full[:, start:], rtol=1e-4, atol=1e-5)


def test_group_of_16_heads(monkeypatch):
    """SALA's G = 16: the group's heads fill the 16-row tile exactly."""
    q, k, v = _qkv(24, 1, 16, 16, seed=3)
    o, idx = _run(monkeypatch, TRITON, q, k, v, exact_normalizer=False)
    o_ref, idx_ref = _run(monkeypatch, REFERENCE, q, k, v, exact_normalizer=False)
    _same_selection(idx, idx_ref, q, k, exact=False)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)


def test_slot_order_does_not_matter(monkeypatch):
    """Indices in any order, -1 padding anywhere (the kernels skip trailing padding only when it is trailing)."""
    from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention

    q, k, v = _qkv(40, 2, 2, 16, seed=9)
    _, idx = _run(monkeypatch, REFERENCE, q, k, v, exact_normalizer=True)
    shuffled = idx[..., torch.randperm(idx.shape[-1], generator=torch.Generator().manual_seed(0)).to(idx.device)]
    assert ((shuffled[..., :-1] < 0) & (shuffled[..., 1:] >= 0)).any()  # some padding before a valid slot
    torch.testing.assert_close(triton_sparse_block_attention(q, k, v, shuffled, block_size=8),
                               triton_sparse_block_attention(q, k, v, idx, block_size=8), rtol=1e-5, atol=1e-6)


# pairwise: every two of (prefill / chunk / decode, path, forced blocks per key tile) meet at least once
@pytest.mark.parametrize(("t_q", "split", "step"), [
    pytest.param(t_q, split, step, id=f"{t_q}-{'split slots' if split else 'window tiles'}-{step} per key tile")
    for t_q, split, step in ((45, False, 1), (45, False, 2), (29, True, 1), (13, True, 1), (13, False, 2),
                             (1, False, 1), (1, True, 2))])
def test_forced_blocks_as_dense_tiles(monkeypatch, t_q, split, step):
    """Stage 2 told the forced blocks equals stage 2 on the same selection without the hint, and the reference,
    in outputs (with and without autograd) and gradients; chunked prefill starts mid-tile. Two forward paths: the
    window kernels followed by the free-block gathers (few programs per SM: prefill), and the split slot loop
    with the forced blocks as virtual slots (``2 * SMs`` programs or more: decode, short chunks; the CPU's
    nominal 132 SMs put every case here). The window kernels take ``step`` forced blocks per key tile (odd
    and even counts of them occur)."""
    from mixarch.kernels.triton.infllm_v2 import sparse
    from mixarch.ops.infllm_v2 import sparse_block_attention

    monkeypatch.setattr(sparse, "WINDOW_STEP", {"fwd": step, "dq": step})
    if not split:
        monkeypatch.setattr(sparse, "num_sms", lambda _device: 1)
    launched = []
    launcher = sparse.launcher
    monkeypatch.setattr(sparse, "launcher", lambda kernel, direct: launched.append(kernel.__name__)
                        or launcher(kernel, direct))
    geo = dict(GEO, local_blocks=2, topk=5)
    q, k, v = _qkv(45, 2, 4, 16, seed=13, t_q=t_q)
    monkeypatch.setenv(KERNELS_ENV, REFERENCE)
    _, idx = infllm_v2_attention(q, k, v, return_indices=True, **geo)
    forcing = dict(init_blocks=geo["init_blocks"], local_blocks=geo["local_blocks"])
    do = seeded_randn(q.shape, 17, device=DEVICE)
    results = []
    for fn, kw in ((sparse.triton_sparse_block_attention, forcing), (sparse.triton_sparse_block_attention, {}),
                   (sparse_block_attention, forcing)):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        o = fn(*leaves, idx, block_size=8, **kw)
        results.append([o, *torch.autograd.grad(o, leaves, do)])
        if t_q == 1:  # without autograd (the same launches: one case is enough, and the cheapest)
            with torch.no_grad():
                torch.testing.assert_close(fn(q, k, v, idx, block_size=8, **kw), o, rtol=0, atol=0)
    for got in results[:2]:
        for name, a, b in zip(("o", "dq", "dk", "dv"), got, results[2]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert ("_window_kernel" in launched) != split, launched
    assert ("_combine_kernel" in launched) == split, launched
    assert "_dq_window_kernel" in launched and "_dkv_window_kernel" in launched, launched


@pytest.mark.parametrize(("t_q", "order"), [(24, "shuffled, with blocks after the query"), (13, "ascending"),
                                            (1, "ascending")])
def test_tma_gathers_equal_pointer_gathers(monkeypatch, t_q, order):
    """The gather kernels' TMA path (tensor descriptors) gives bit-identical outputs and gradients to the per-thread
    loads: on selection rows (ascending) and on rows in any order holding blocks the query cannot see, whose
    values never reach it (read out of bounds as zeros there, masked by the loads on the other path): an
    infinite value in the last block leaves the queries before that block finite. Prefill and chunks take window
    tiles, then the gathers; a single query (decode) the split slot loop, whose own block is gathered too.
    Batch of 2: a block never reads into the next sequence's keys; the second sequence also matches the torch
    reference."""
    from mixarch.kernels.triton.infllm_v2 import sparse

    if t_q > 1:
        monkeypatch.setattr(sparse, "num_sms", lambda _device: 1)  # window tiles + gathers (the prefill path)
    decided = []
    tma_gathers = sparse._tma_gathers
    monkeypatch.setattr(sparse, "_tma_gathers", lambda *a: decided.append(tma_gathers(*a)) or decided[-1])
    # blocks of 16 keys: TMA takes unpadded power-of-two tiles only
    geo = dict(block_size=16, kernel_size=8, kernel_stride=4, init_blocks=1, local_blocks=1, topk=5, dense_len=0)
    q, k, v = (torch.cat([x, x.flip(1) * 0.5]) for x in _qkv(64, 2, 4, 16, seed=21, t_q=t_q))
    monkeypatch.setenv(KERNELS_ENV, REFERENCE)
    _, idx = infllm_v2_attention(q, k, v, return_indices=True, **geo)
    v[0, -1, 0, 0] = float("inf")
    if order != "ascending":
        gen = torch.Generator().manual_seed(1)
        late = torch.randint(0, 4, idx.shape[:-1] + (2,), generator=gen).to(idx.device)
        idx = torch.cat([idx, late], -1)  # duplicates of the query's blocks and blocks after it
        idx = idx[..., torch.randperm(idx.shape[-1], generator=gen).to(idx.device)]
        seen = torch.stack([(idx[..., :j] == idx[..., j:j + 1]).any(-1) for j in range(idx.shape[-1])], -1)
        idx = torch.where(seen, -1, idx)  # distinct per row: the first of each block stays
        assert (idx > torch.arange(64 - t_q, 64, device=idx.device)[:, None] // 16).any()
    do = seeded_randn(q.shape, 23, device=DEVICE)
    results = {}
    for tma in (True, False):
        monkeypatch.setattr(sparse, "TMA_GATHERS", tma)
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        o = sparse.triton_sparse_block_attention(*leaves, idx, block_size=16, init_blocks=1, local_blocks=1)
        results[tma] = [o, *torch.autograd.grad(o, leaves, do)]
    assert decided == [True, True, False, False]  # forward and dq kernel, each way
    for name, a, b in zip(("o", "dq", "dk", "dv"), results[True], results[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
    o, dq = results[True][:2]
    before = max(0, 48 - (64 - t_q))  # queries before the last block
    assert torch.isfinite(o[1]).all() and torch.isfinite(o[0, :before]).all()
    assert torch.isfinite(dq[1]).all() and torch.isfinite(dq[0, :before]).all()
    # the second sequence (no infinite value) against the torch reference: outputs and gradients
    from mixarch.ops.infllm_v2 import sparse_block_attention

    leaves = [x[1:].clone().requires_grad_() for x in (q, k, v)]
    o_ref = sparse_block_attention(*leaves, idx[1:], block_size=16, init_blocks=1, local_blocks=1)
    for name, a, b in zip(("o", "dq", "dk", "dv"), results[True],
                          [o_ref, *torch.autograd.grad(o_ref, leaves, do[1:])]):
        torch.testing.assert_close(a[1:], b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize(("init", "local", "t_q"), [(1, 1, 96), (1, 4, 96), (2, 3, 40), (2, None, 96)],
                         ids=["1 window block", "4 window blocks", "3 window blocks, chunk", "init blocks only"])
def test_tma_window_tiles_equal_pointer_loads(monkeypatch, init, local, t_q):
    """The forward window kernel's blocks before the queries' own one by TMA (one block, or ``STEP`` = 2 in one
    load) give bit-identical outputs to the per-thread loads: even and odd numbers of window blocks, several
    init blocks, none in the window (``local_blocks=None``), a chunk of later queries. Also against the torch
    reference."""
    from mixarch.kernels.triton.infllm_v2 import sparse
    from mixarch.ops.infllm_v2 import sparse_block_attention

    monkeypatch.setattr(sparse, "num_sms", lambda _device: 1)  # window tiles + gathers (the prefill path)
    decided = []
    tma_window = sparse._tma_window
    monkeypatch.setattr(sparse, "_tma_window", lambda *a: decided.append(tma_window(*a)) or decided[-1])
    q, k, v = _qkv(96, 2, 4, 16, seed=31, t_q=t_q)
    idx = torch.full((1, 2, t_q, 1), -1, dtype=torch.int64, device=DEVICE)  # the forced blocks only
    forcing = dict(init_blocks=init, local_blocks=local)
    outs = {}
    for tma in (True, False):
        monkeypatch.setattr(sparse, "TMA_WINDOW", tma)
        outs[tma] = sparse.triton_sparse_block_attention(q, k, v, idx, block_size=16, **forcing)
    assert decided == [True, False]
    assert torch.equal(outs[True], outs[False])
    torch.testing.assert_close(outs[True], sparse_block_attention(q, k, v, idx, block_size=16, **forcing),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("t_q", [50, 7, 1])
def test_tma_key_tiles_equal_pointer_loads(monkeypatch, t_q, exact):
    """Stage 1's compressed-key tiles by TMA (normalizer and score kernels) give bit-identical block scores to the
    per-thread loads: prefill, a chunk, a decode query (keys split over programs), both normalizers, a last key
    tile running past the keys (read as zeros either way); batch of 2."""
    from mixarch.kernels.triton.infllm_v2 import select
    from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

    decided = []
    tma_keys = select._tma_keys
    monkeypatch.setattr(select, "_tma_keys", lambda *a: decided.append(tma_keys(*a)) or decided[-1])
    q, k, _ = (torch.cat([x, x.flip(1) * 0.5]) for x in _qkv(50, 2, 3, 16, seed=41, t_q=t_q))
    c1 = compress_keys(k, 4, 2)
    c2 = None if exact else compress_keys(k, 4 * C2_FACTOR, 2 * C2_FACTOR)
    scores = {}
    for tma in (True, False):
        monkeypatch.setattr(select, "TMA_KEYS", tma)
        scores[tma] = select.block_scores(q, c1, c2, 50, 8, 4, 2, 0.25, exact, direct=True)
    assert decided[0] and not decided[-1]
    assert c1.shape[1] % 16 and (scores[True] > 0).any()
    # only the candidates are written: the rest keeps the NaN poison of fresh buffers, in both
    torch.testing.assert_close(scores[True], scores[False], rtol=0, atol=0, equal_nan=True)


def test_tracing_sees_the_custom_ops():
    """Calls that would launch directly in eager mode (no autograd) still trace as the custom ops under make_fx
    (a dispatch mode): a trace must never bake in a launch."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from mixarch.kernels.triton.infllm_v2.select import triton_infllm_v2_select
    from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention
    from mixarch.ops.infllm_v2 import compress_keys

    q, k, v = _qkv(24, 2, 2, 16, seed=23)
    c1 = compress_keys(k, GEO["kernel_size"], GEO["kernel_stride"])
    sel = {n: GEO[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk")}

    def both(q, k, v, c1):
        idx = triton_infllm_v2_select(q, c1, None, 24, **sel, scale=0.25, exact_normalizer=True)
        return triton_sparse_block_attention(q, k, v, idx, block_size=8, init_blocks=1, local_blocks=1)

    with torch.no_grad():
        code = make_fx(both)(q, k, v, c1).code
    assert "infllm_v2_select_triton" in code and "infllm_v2_sparse_fwd_triton" in code, code

    def train(q, k, v, idx):
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        o = triton_sparse_block_attention(*leaves, idx, block_size=8, init_blocks=1, local_blocks=1)
        return torch.autograd.grad(o.sum(), leaves)

    with torch.no_grad():
        idx = triton_infllm_v2_select(q, c1, None, 24, **sel, scale=0.25, exact_normalizer=True)
    code = make_fx(train)(q, k, v, idx).code
    assert "infllm_v2_sparse_fwd_triton" in code and "infllm_v2_sparse_bwd_triton" in code, code


def test_eager_training_launches_directly_and_matches_the_custom_ops(monkeypatch):
    """Eager forward + backward of stage 2 launch the kernels themselves (``wrap_triton``'s eager dispatch costs
    several times a small launch's GPU time) and give exactly the custom ops' outputs and gradients."""
    from mixarch.kernels.triton.infllm_v2 import sparse

    directs = []
    launcher = sparse.launcher
    monkeypatch.setattr(sparse, "launcher", lambda kernel, direct: directs.append(direct) or launcher(kernel, direct))
    q, k, v = _qkv(40, 2, 2, 16, seed=29)
    monkeypatch.setenv(KERNELS_ENV, REFERENCE)
    _, idx = infllm_v2_attention(q, k, v, return_indices=True, **GEO)
    do = seeded_randn(q.shape, 31, device=DEVICE)
    results = []
    for fn in (lambda *x: sparse.triton_sparse_block_attention(*x, idx, block_size=8, init_blocks=1, local_blocks=1),
               lambda *x: sparse.sparse_fwd_op(*x, idx, 8, 16 ** -0.5, 1, 1)[0]):
        directs.clear()
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        o = fn(*leaves)
        results.append([o, *torch.autograd.grad(o, leaves, do)])
        results[-1].append(list(directs))
    assert results[0][-1] and all(results[0][-1]), results[0][-1]
    assert results[1][-1] and not any(results[1][-1]), results[1][-1]
    for name, a, b in zip(("o", "dq", "dk", "dv"), results[0], results[1]):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kernels", [TRITON, REFERENCE])
def test_layer_forces_blocks_in_stage_2_only_when_all_are_selected(monkeypatch, kernels):
    """With top-k below the number of forced blocks the selection drops some of them (the oldest): stage 2 must
    then attend to exactly the selection, not to every forced block."""
    from mixarch.ops.infllm_v2 import sparse_block_attention

    geo = dict(GEO, local_blocks=3, topk=3)  # 1 init + 4 local blocks > 3
    q, k, v = _qkv(60, 1, 2, 16, seed=21)
    o, idx = _run(monkeypatch, kernels, q, k, v, **{n: geo[n] for n in ("local_blocks", "topk")})
    torch.testing.assert_close(o, sparse_block_attention(q, k, v, idx, block_size=8), rtol=1e-5, atol=1e-6)
    with_all = sparse_block_attention(q, k, v, idx, block_size=8, init_blocks=1, local_blocks=3)
    assert (o - with_all).abs().max() > 1e-3  # forcing them all would have changed the result


def test_single_key_gradients_vanish():
    """One key: o = v, so dq and dk vanish (to rounding: delta = rowsum(o * do)) and dv = sum of do."""
    from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention

    q, k, v = (x.requires_grad_() for x in _qkv(1, 1, 3, 16, seed=5))
    o = triton_sparse_block_attention(q, k, v, torch.zeros((1, 1, 1, 1), dtype=torch.int64, device=DEVICE),
                                      block_size=4)
    do = torch.randn_like(o)
    o.backward(do)
    torch.testing.assert_close(o, v.expand_as(o))
    assert q.grad.abs().max() < 1e-6 and k.grad.abs().max() < 1e-6
    torch.testing.assert_close(v.grad, do.sum(2, keepdim=True))


def test_unsupported_inputs_fall_through_to_the_reference():
    def takes(op, *args, **kwargs) -> bool:  # would the Triton backend take these inputs?
        return get_host().kernels.get(op, "triton").supports(*args, **kwargs)

    q, k, v = _qkv(16, 1, 2, 16, seed=1)
    idx = torch.zeros((1, 1, 16, 1), dtype=torch.int64, device=DEVICE)
    assert takes("infllm_v2_sparse_attention", q, k, v, idx, block_size=8)
    assert not takes("infllm_v2_sparse_attention", q.double(), k.double(), v.double(), idx, block_size=8)
    assert choose("infllm_v2_sparse_attention", q.double(), k.double(), v.double(), idx,
                  block_size=8).backend == "reference"
    c1 = k[:, :7]
    kw = dict(block_size=12, kernel_size=4, kernel_stride=4, init_blocks=1, local_blocks=1, topk=2, scale=0.25,
              exact_normalizer=True)
    assert not takes("infllm_v2_select", q, c1, None, 16, **kw)  # 12 / 4 blocks: not a power of two
    assert choose("infllm_v2_select", q, c1, None, 16, **kw).backend == "reference"
    assert takes("infllm_v2_select", q, c1, None, 16, **{**kw, "block_size": 16})
    # by default Triton runs on CUDA only; CPU tensors take it when forced (under the interpreter)
    expected = "triton" if CUDA else "reference"
    assert choose("infllm_v2_select", q, c1, None, 16, **{**kw, "block_size": 16}).backend == expected


@pytest.mark.skipif(not CUDA, reason="torch.compile of Triton ops needs CUDA")
@pytest.mark.parametrize("forcing", [{}, dict(init_blocks=1, local_blocks=2)], ids=["gathers only", "window tiles"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compiles_without_graph_breaks(monkeypatch, dtype, forcing):
    # compile traces the ops' torch.empty calls: the NaN-poisoning fill would be an in-place op in the graph
    for owner, name in ((torch, "empty"), (torch, "empty_like"), (torch.Tensor, "new_empty")):
        monkeypatch.setattr(owner, name, getattr(getattr(owner, name), "__wrapped__", getattr(owner, name)))
    from mixarch.kernels.triton.infllm_v2.select import triton_infllm_v2_select
    from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention
    from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

    def layer(q, k, v):
        c1, c2 = compress_keys(k, 32, 16), compress_keys(k, 32 * C2_FACTOR, 16 * C2_FACTOR)
        idx = triton_infllm_v2_select(q, c1, c2, k.shape[1], block_size=64, kernel_size=32, kernel_stride=16,
                                      init_blocks=1, local_blocks=2, topk=6, scale=0.125, exact_normalizer=False)
        return triton_sparse_block_attention(q, k, v, idx, block_size=64, scale=0.125, **forcing)

    q, k, v = (x.to(dtype).requires_grad_() for x in _qkv(1000, 2, 16, 64, seed=2))
    eager = layer(q, k, v)
    compiled = torch.compile(layer, fullgraph=True)(q, k, v)
    assert_close_rel("compiled", eager.float(), compiled.float(), 1e-6 if dtype == torch.float32 else 1e-2)
    compiled.float().square().sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_topk_tiles():
    """The top-k launches' programs on CUDA (``TOPK_LAUNCH``): a prefill row per program (two of 256 candidates)
    with a warp per 512 candidates; a decode row on 4 warps; 16 rows per program off CUDA (the kernel takes any
    number of rows: ``test_topk_kernel_matches_select_blocks`` runs it with 16 per program here and with these
    tiles on a GPU)."""
    from mixarch.kernels.triton.infllm_v2.select import _topk_tile

    assert [_topk_tile(nbp, 1000, False, True) for nbp in (2048, 1024, 512, 256, 16)] == [
        (1, 4), (1, 2), (1, 1), (2, 1), (32, 1)]
    assert _topk_tile(16, 5, False, True) == (8, 1)  # no more rows than the range has (a power of two)
    assert _topk_tile(2048, 1, True, True) == (1, 4)
    assert _topk_tile(2048, 1000, False, False)[0] == 16


@pytest.mark.parametrize("values", ["tied", "distinct", "wide"])
@pytest.mark.parametrize("t_q", [1, 15, 64, 300])
def test_topk_kernel_matches_select_blocks(t_q, values):
    """The top-k launches alone (rows grouped by their number of candidates: one launch for ``t_q`` = 1 and 15,
    two for 64, three for 300) against ``select_blocks`` on forced scores: exact ties (scores from four levels,
    ``-inf`` among them: the larger block index wins), distinct ones in [0, 1), or ``wide`` ones (both signs,
    magnitudes 1e-30 to 1e30: keys across the whole int32 range of the threshold search; 5% NaN, which rank
    above ``+inf`` as in ``torch.sort``); the poison beyond the candidates must not be read."""
    from mixarch.kernels.triton.infllm_v2.select import _row_ranges, topk_blocks
    from mixarch.ops.infllm_v2.select import select_blocks

    block, init, local, topk, hkv = 4, 1, 2, 7, 2
    t_k = 70 + t_q
    nb = -(-t_k // block)
    gen = torch.Generator().manual_seed(t_q)
    if values == "tied":
        scores = torch.tensor([float("-inf"), 0.25, 0.5, 3.0])[torch.randint(0, 4, (hkv, t_q, nb), generator=gen)]
    elif values == "distinct":
        scores = torch.rand((hkv, t_q, nb), generator=gen)
    else:
        exponent = torch.empty((hkv, t_q, nb)).uniform_(-30, 30, generator=gen)
        scores = torch.randn((hkv, t_q, nb), generator=gen) * 10.0 ** exponent
        scores[torch.rand((hkv, t_q, nb), generator=gen) < 0.05] = float("nan")  # above +inf, as torch.sort
    bq = (torch.arange(t_k - t_q, t_k) // block)[:, None]
    blk = torch.arange(nb)[None, :]
    candidate = blk <= bq
    scores = scores.masked_fill(~candidate, 1e30).to(DEVICE)  # poison: never a candidate
    forced = (blk < init) | ((blk >= bq - local) & candidate)
    want = select_blocks(scores.masked_fill(forced.to(DEVICE), float("inf")).unsqueeze(0),
                         candidate.to(DEVICE), topk)
    out = torch.full((1, hkv, t_q, topk), -7, dtype=torch.int64, device=DEVICE)
    assert len(_row_ranges(t_q, t_k, block, nb)) == {1: 1, 15: 1, 64: 2, 300: 3}[t_q]
    assert torch.equal(topk_blocks(scores, out, t_k, block, init, local, direct=True), want)
    if t_q == 1:  # a decode row: the search starts from the bucket counts of the unforced candidates
        hist = _bucket_counts(scores, candidate.to(DEVICE) & ~forced.to(DEVICE))
        out.fill_(-7)
        assert torch.equal(topk_blocks(scores, out, t_k, block, init, local, direct=True, hist=hist), want)


def _bucket_counts(scores: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Torch form of the score kernel's bucket counts: ``[rows, 2^HIST_BITS]`` int32 of the top bits of the
    order-preserving int32 keys of ``scores`` ``[rows, 1, nb]`` where ``counted``."""
    from mixarch.kernels.triton.infllm_v2.select import HIST_BITS

    bits = torch.where(scores.isnan(), 0x7FC00000, scores.float().view(torch.int32))
    key = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    bucket = (key >> (32 - HIST_BITS)) + (1 << (HIST_BITS - 1))
    hist = torch.zeros((scores.shape[0], 1 << HIST_BITS), dtype=torch.int32, device=scores.device)
    ones = counted.expand_as(bucket).to(torch.int32)
    return hist.scatter_add_(1, bucket.flatten(1).long(), ones.flatten(1))


@pytest.mark.parametrize("exact", [True, False])
def test_decode_bucket_counts(monkeypatch, exact):
    """A decode query's selection: the score kernel's bucket counts equal a torch count of the block scores it
    wrote (unforced candidates only), and the indices equal those of the plain bisection (DECODE_HIST off)."""
    from mixarch.kernels.triton.infllm_v2 import select
    from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

    t_k, init, local, topk = 90, 1, 2, 5
    q, k, _ = (torch.cat([x, x.flip(1) * 0.5]) for x in _qkv(t_k, 2, 2, 16, seed=43, t_q=1))
    c1 = compress_keys(k, 4, 2)
    c2 = None if exact else compress_keys(k, 4 * C2_FACTOR, 2 * C2_FACTOR)
    nb = -(-t_k // 8)
    hist = torch.full((4, 1 << select.HIST_BITS), -5, dtype=torch.int32, device=DEVICE)  # poison
    scores = select.block_scores(q, c1, c2, t_k, 8, 4, 2, 0.25, exact, direct=True, hist=hist, forcing=(init, local))
    blk = torch.arange(nb, device=DEVICE)
    bt = (t_k - 1) // 8
    counted = ((blk < init) | (blk >= bt - local)).logical_not().view(1, 1, nb)
    assert counted.sum() > topk and hist.sum() == 4 * counted.sum()
    torch.testing.assert_close(hist, _bucket_counts(scores, counted), rtol=0, atol=0)
    picked = {}
    for on in (True, False):
        monkeypatch.setattr(select, "DECODE_HIST", on)
        picked[on] = select._select(q, c1, c2, t_k, 8, 4, 2, init, local, topk, 0.25, exact, direct=True)
    assert torch.equal(picked[True], picked[False])


@pytest.mark.parametrize("t_q", [1, 6])
def test_score_kernel_first_tile_before_the_wait(monkeypatch, t_q):
    """Split key ranges (decode, short chunks): the score kernel's first key tile computed ahead of the loop
    (``EARLY_SCORES``, before the PDL wait on a GPU) gives the same block scores bit for bit; with three splits
    that tile is a split's own first tile once and the carried tile before it twice."""
    from mixarch.kernels.triton.infllm_v2 import select
    from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

    t_k = 90
    q, k, _ = (torch.cat([x, x.flip(1) * 0.5]) for x in _qkv(t_k, 2, 2, 16, seed=47, t_q=t_q))
    c1, c2 = compress_keys(k, 4, 2), compress_keys(k, 4 * C2_FACTOR, 2 * C2_FACTOR)
    launched = []
    launcher = select.launcher
    monkeypatch.setattr(select, "launcher", lambda kernel, direct: launched.append(kernel.__name__)
                        or launcher(kernel, direct))
    scores = {}
    for early in (True, False):
        monkeypatch.setattr(select, "EARLY_SCORES", early)
        scores[early] = select.block_scores(q, c1, c2, t_k, 8, 4, 2, 0.25, False, direct=True)
    blocks = torch.arange(-(-t_k // 8), device=DEVICE)
    candidate = blocks[None, :] <= torch.arange(t_k - t_q, t_k, device=DEVICE)[:, None] // 8
    assert launched == ["_lse_kernel", "_score_kernel"] * 2
    early, after = scores[True][:, candidate], scores[False][:, candidate]
    assert not early.isnan().any() and early.isfinite().float().mean() > 0.8  # -inf: blocks with no visible key yet
    torch.testing.assert_close(early, after, rtol=0, atol=0)


def test_programmatic_dependent_launch_only_for_direct_cuda_launches(monkeypatch):
    """PDL: direct launches on CUDA sm_90+ only, never on the interpreter, off with ``MIXARCH_PDL=0``; a bad
    value is named in the error."""
    from mixarch.errors import MixarchError
    from mixarch.kernels.triton import pdl

    assert not pdl.pdl_enabled(torch.device("cpu"), True)
    monkeypatch.setenv(pdl.ENV, "sometimes")
    with pytest.raises(MixarchError, match="MIXARCH_PDL='sometimes': expected 1"):
        pdl.pdl_enabled(torch.device("cpu"), True)
    if CUDA:
        dev = torch.device("cuda")
        monkeypatch.setenv(pdl.ENV, "0")
        assert not pdl.pdl_enabled(dev, True)
        monkeypatch.delenv(pdl.ENV)
        assert not pdl.pdl_enabled(dev, False)
        assert pdl.pdl_enabled(dev, True) == (torch.cuda.get_device_capability()[0] >= 9)


@pytest.mark.skipif(not CUDA, reason="programmatic dependent launch is a CUDA feature")
@pytest.mark.parametrize("t_q", [1, 200])
def test_programmatic_dependent_launch_changes_nothing(monkeypatch, t_q):
    """Selection + stage 2 (decode: the split kernels and their merge; prefill: window tiles, gathers) with and
    without PDL, eagerly and as CUDA-graph replays: bit-identical indices and outputs."""
    from mixarch.kernels.triton import pdl

    q, k, v = (x.to(torch.bfloat16) for x in _qkv(1200, 2, 16, 64, seed=4, t_q=t_q))
    geo = dict(GEO, block_size=64, kernel_size=32, kernel_stride=16, local_blocks=2, topk=6)
    runs = {}
    for mode in ("0", "1"):
        monkeypatch.setenv(pdl.ENV, mode)
        with torch.no_grad():
            runs[mode, "eager"] = _run(monkeypatch, TRITON, q, k, v, exact_normalizer=False, **geo)
            graph = torch.cuda.CUDAGraph()
            _run(monkeypatch, TRITON, q, k, v, exact_normalizer=False, **geo)  # compiled before capture
            with torch.cuda.graph(graph):
                o, idx = _run(monkeypatch, TRITON, q, k, v, exact_normalizer=False, **geo)
            graph.replay()
            runs[mode, "graph"] = (o.clone(), idx.clone())
    ref_o, ref_idx = runs["0", "eager"]
    for o, idx in runs.values():
        assert torch.equal(idx, ref_idx) and torch.equal(o, ref_o)


@pytest.mark.skipif(not CUDA, reason="the launch configurations and tile sizes of CUDA; bf16")
@pytest.mark.parametrize(("d", "one_program"), [(64, False), (192, False), (256, False), (128, True)])
def test_head_dims_on_cuda(monkeypatch, d, one_program):
    """Other head dimensions than the benchmarks' 128 (up to ``MAX_HEAD_DIM``), bf16, SALA-like geometry at
    1100 tokens (window tiles): the selection, outputs and gradients against the fp32 reference on the same
    (bf16-valued) inputs, by relative RMSE, so that no tile outgrows shared memory there. ``one_program``: the
    stage-1 launch as for long prefills (one program per query tile, ``STAGE1["keys"]`` keys per tile), which
    these 1100 tokens would otherwise split over programs."""
    if one_program:
        from mixarch.kernels.triton.infllm_v2 import select

        monkeypatch.setattr(select, "num_sms", lambda _device: 1)
    geo = dict(block_size=64, kernel_size=32, kernel_stride=16, init_blocks=1, local_blocks=2, topk=6,
               dense_len=0)
    q, k, v = (x.bfloat16() for x in _qkv(1100, 2, 2, d, seed=29))
    do = seeded_randn(q.shape, 31, device=DEVICE).bfloat16()
    outs = {}
    for name, kernels in (("triton", TRITON), ("reference", REFERENCE)):
        dtype = torch.bfloat16 if name == "triton" else torch.float32
        leaves = [x.to(dtype).requires_grad_() for x in (q, k, v)]
        monkeypatch.setenv(KERNELS_ENV, kernels)
        o, idx = infllm_v2_attention(*leaves, return_indices=True, exact_normalizer=False, **geo)
        outs[name] = (o, idx, torch.autograd.grad(o, leaves, do.to(dtype)))
    (o, idx, grads), (o_ref, idx_ref, grads_ref) = outs["triton"], outs["reference"]
    differ = (idx != idx_ref).any(-1).float().mean().item()
    assert differ < 0.01, f"{differ:.1%} of the rows select other blocks"  # near-ties of bf16-rounded scores
    rows = ~(idx != idx_ref).any(-1)  # [B, Hkv, Tq]: compare the queries whose blocks agree
    keep = rows.all(1)[0]  # queries whose every KV head agrees
    for name, a, b in zip(("o", "dq"), (o, grads[0]), (o_ref, grads_ref[0])):
        assert_close_rel(name, b[:, keep], a[:, keep])  # bf16 outputs: the bf16 tolerance
    if differ == 0:
        for name, a, b in zip(("dk", "dv"), grads[1:], grads_ref[1:]):
            assert_close_rel(name, b, a)
