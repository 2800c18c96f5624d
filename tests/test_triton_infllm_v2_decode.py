"""The Triton InfLLM-V2 decode step (``infllm_v2_decode``: the top-k by rank counting, stage 2 over the rank-ordered
selection) against the two-op Triton path (select, then sparse attention), the top-k kernel and the reference.

Runs on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (tiny fp32 shapes); skipped otherwise.
"""

from __future__ import annotations

import pytest
import torch

from mixarch.errors import MixarchError
from mixarch.kernels import KERNELS_ENV, choose
from mixarch.kernels.triton import interpreting
from mixarch.kernels.triton.infllm_v2 import decode
from mixarch.kernels.triton.infllm_v2.decode import select_attend, triton_infllm_v2_decode
from mixarch.kernels.triton.infllm_v2.select import topk_blocks, triton_infllm_v2_select
from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys, infllm_v2_attention
from mixarch.ops.infllm_v2.attention import (
    mask_indices,
    selection_mask,
    sparse_block_attention,
    stage2_forcing,
)
from mixarch.testing.compare import assert_close, assert_close_rel
from mixarch.testing.strategies import seeded_randn

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.skipif(not (CUDA or interpreting()), reason="needs CUDA or TRITON_INTERPRET=1"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning"),  # interpreter, log2(0)
]
DEVICE = "cuda" if CUDA else "cpu"


def _case(b: int, t_k: int, hkv: int, group: int, d: int, seed: int):
    return (seeded_randn((b, 1, hkv * group, d), seed, device=DEVICE),
            seeded_randn((b, t_k, hkv, d), seed + 1, device=DEVICE),
            seeded_randn((b, t_k, hkv, d), seed + 2, device=DEVICE))


def _scores(kind: str, rows: int, nb: int, seed: int) -> torch.Tensor:
    """Block scores ``[rows, 1, nb]``: exact ties (four levels, ``-inf`` among them), distinct ones in [0, 1), or
    ``wide`` ones (both signs, 1e-30 to 1e30, 5% NaN: above ``+inf``, as ``torch.sort``)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "tied":
        return torch.tensor([float("-inf"), 0.25, 0.5, 3.0])[torch.randint(0, 4, (rows, 1, nb), generator=gen)]
    if kind == "distinct":
        return torch.rand((rows, 1, nb), generator=gen)
    exponent = torch.empty((rows, 1, nb)).uniform_(-30, 30, generator=gen)
    scores = torch.randn((rows, 1, nb), generator=gen) * 10.0 ** exponent
    scores[torch.rand((rows, 1, nb), generator=gen) < 0.05] = float("nan")
    return scores


@pytest.mark.parametrize("kind", ["tied", "distinct", "wide"])
@pytest.mark.parametrize(("t_k", "block", "init", "local", "topk"), [
    (63, 4, 1, 2, 7),  # 16 blocks: 4 programs of 4
    (65, 4, 1, 2, 7),  # 17 blocks (32 wide): programs own blocks past the last
    (1, 4, 1, 2, 7),  # one block: fewer candidates than topk
    (40, 4, 2, 1, 3),  # topk under the forced blocks: the largest indices among them
    (130, 8, 0, 0, 5),  # no init block, the own block only
])
def test_selection_equals_the_topk_kernel(kind, t_k, block, init, local, topk):
    """Given the same block scores, the rank-counting kernel selects exactly the top-k kernel's blocks (ties: the
    larger block index; NaN above the forced blocks' ``+inf``) and stage 2 attends them: the output equals the
    fp64 reference on those blocks."""
    b, hkv, group, d = 2, 2, 3, 16
    q, k, v = _case(b, t_k, hkv, group, d, seed=t_k + block)
    nb = -(-t_k // block)
    scores = _scores(kind, b * hkv, nb, seed=t_k).to(DEVICE)
    want = topk_blocks(scores, torch.full((b, hkv, 1, topk), -7, dtype=torch.int64, device=DEVICE), t_k, block,
                       init, local, direct=True)
    o, selected = select_attend(scores, q, k, v, block, init, local, topk, 0.25, direct=True)
    assert selected.dtype == torch.bool and selected.shape == (b, hkv, 1, nb)
    assert torch.equal(mask_indices(selected, topk), want)
    ref = sparse_block_attention(q.double(), k.double(), v.double(), want, block_size=block, scale=0.25)
    assert_close("o", ref, o.double(), rtol=2e-5, atol=2e-5 * ref.abs().max().item())


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(("b", "t_k", "group"), [(1, 90, 2), (2, 129, 3), (1, 15, 1)])
def test_decode_equals_the_two_op_path(exact, b, t_k, group):
    """The whole decode op against Triton select + sparse attention on the same inputs: the same blocks (the
    same score kernels) and outputs equal to fp32 rounding."""
    geo = dict(block_size=8, kernel_size=4, kernel_stride=2, init_blocks=1, local_blocks=1, topk=4)
    q, k, v = _case(b, t_k, 2, group, 16, seed=b * t_k)
    c1 = compress_keys(k, 4, 2)
    c2 = None if exact else compress_keys(k, 4 * C2_FACTOR, 2 * C2_FACTOR)
    args = dict(**geo, scale=0.25, exact_normalizer=exact)
    o, selected = triton_infllm_v2_decode(q, k, v, c1, c2, **args)
    idx = triton_infllm_v2_select(q, c1, c2, t_k, **args)
    assert torch.equal(selected, selection_mask(idx, -(-t_k // 8)))
    want = triton_sparse_block_attention(q, k, v, idx, block_size=8, scale=0.25, **stage2_forcing(1, 1, 4))
    assert_close("o", want, o, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_layer_decode_uses_the_fused_op(monkeypatch):
    """``infllm_v2_attention`` runs a decode step (one query, no gradient, no indices asked for) through
    ``infllm_v2_decode``; with indices, or with gradients, through select + sparse attention; all three agree
    with the reference."""
    calls = []
    fused = decode._decode
    monkeypatch.setattr(decode, "_decode", lambda *a, **kw: calls.append(1) or fused(*a, **kw))
    monkeypatch.setenv(KERNELS_ENV, "triton")
    geo = dict(block_size=8, kernel_size=4, kernel_stride=2, init_blocks=1, local_blocks=1, topk=3, dense_len=0)
    q, k, v = _case(2, 70, 2, 2, 16, seed=5)
    with torch.no_grad():
        o = infllm_v2_attention(q, k, v, **geo)
        assert calls == [1]
        o_idx, _ = infllm_v2_attention(q, k, v, **geo, return_indices=True)
        assert calls == [1]
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o_grad = infllm_v2_attention(*leaves, **geo)
    assert calls == [1]
    o_grad.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)
    monkeypatch.setenv(KERNELS_ENV, "reference")
    with torch.no_grad():
        ref = infllm_v2_attention(q.double(), k.double(), v.double(), **geo)
    for got in (o, o_idx, o_grad):
        assert_close("o", ref, got.detach().double(), rtol=2e-5, atol=2e-5 * ref.abs().max().item())


def test_dispatch_of_decode_steps(monkeypatch):
    """Triton on CUDA by default for one query without gradient, the composition of the two ops otherwise."""
    q, k, v = _case(1, 40, 1, 2, 16, seed=9)
    c1 = compress_keys(k, 4, 2)
    kw = dict(block_size=8, kernel_size=4, kernel_stride=2, init_blocks=1, local_blocks=1, topk=3, scale=0.25,
              exact_normalizer=True)
    monkeypatch.delenv(KERNELS_ENV, raising=False)
    assert choose("infllm_v2_decode", q, k, v, c1, None, **kw).backend == ("triton" if CUDA else "reference")
    q2 = torch.cat([q, q], dim=1)
    monkeypatch.setenv(KERNELS_ENV, "triton")
    assert choose("infllm_v2_decode", q, k, v, c1, None, **kw).backend == "triton"
    with pytest.raises(MixarchError, match="does not support these inputs"):
        choose("infllm_v2_decode", q2, k, v, c1, None, **kw)


def test_one_program_per_block_and_many(monkeypatch):
    """The program count does not change the result: each program ranking 1, 2 or all blocks."""
    q, k, v = _case(1, 61, 2, 2, 16, seed=11)
    scores = _scores("distinct", 2, 8, seed=3).to(DEVICE)
    outs = []
    for own in (1, 2, 8):
        monkeypatch.setattr(decode, "OWN", own)
        outs.append(select_attend(scores, q, k, v, 8, 1, 1, 4, 0.25, direct=True))
    for o, selected in outs[1:]:
        assert torch.equal(selected, outs[0][1])
        assert_close_rel("o", outs[0][0], o, 1e-6)


def test_tracing_sees_the_custom_op():
    """Under make_fx (a dispatch mode) the decode op traces as its custom op, with the eager call's result."""
    from torch.fx.experimental.proxy_tensor import make_fx

    q, k, v = _case(1, 40, 2, 2, 16, seed=13)
    c1 = compress_keys(k, 4, 2)
    kw = dict(block_size=8, kernel_size=4, kernel_stride=2, init_blocks=1, local_blocks=1, topk=3, scale=0.25,
              exact_normalizer=True)

    def step(q, k, v, c1):
        return triton_infllm_v2_decode(q, k, v, c1, None, **kw)

    with torch.no_grad():
        traced = make_fx(step)(q, k, v, c1)
        assert "infllm_v2_decode_triton" in traced.code, traced.code
        (o, selected), (o_eager, selected_eager) = traced(q, k, v, c1), step(q, k, v, c1)
    assert torch.equal(selected, selected_eager)
    assert_close("o", o_eager, o, rtol=1e-6, atol=1e-6 * o_eager.abs().max().item())


@pytest.mark.skipif(not CUDA, reason="torch.compile of Triton ops needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_decode_step_compiles_without_graph_breaks(monkeypatch, dtype):
    # compile traces the ops' torch.empty calls: the NaN-poisoning fill would be an in-place op in the graph
    for owner, name in ((torch, "empty"), (torch, "empty_like"), (torch.Tensor, "new_empty")):
        monkeypatch.setattr(owner, name, getattr(getattr(owner, name), "__wrapped__", getattr(owner, name)))

    def step(q, k, v):
        c1, c2 = compress_keys(k, 32, 16), compress_keys(k, 32 * C2_FACTOR, 16 * C2_FACTOR)
        return triton_infllm_v2_decode(q, k, v, c1, c2, block_size=64, kernel_size=32, kernel_stride=16,
                                       init_blocks=1, local_blocks=2, topk=6, scale=0.125, exact_normalizer=False)

    q, k, v = (x.to(dtype) for x in _case(2, 1000, 2, 16, 64, seed=2))
    with torch.no_grad():
        o, selected = step(q, k, v)
        o_c, selected_c = torch.compile(step, fullgraph=True)(q, k, v)
    assert torch.equal(selected, selected_c)
    assert_close_rel("compiled", o.float(), o_c.float(), 1e-6 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("exact", [True, False])
def test_decode_step_equals_the_last_row_of_the_full_forward(monkeypatch, exact):
    """The decode op on the last query equals the last row of the layer's forward over every query (select +
    sparse attention on the whole sequence, the prefill path), with the same blocks."""
    monkeypatch.setenv(KERNELS_ENV, "triton")
    geo = dict(block_size=8, kernel_size=4, kernel_stride=2, init_blocks=1, local_blocks=1, topk=5, dense_len=0,
               exact_normalizer=exact)
    t = 57  # 8 blocks: 3 forced (init, the last two), 2 picked of the other 5
    q = seeded_randn((1, t, 4, 16), 29, device=DEVICE)
    _, k, v = _case(1, t, 2, 2, 16, seed=31)
    with torch.no_grad():
        full, idx = infllm_v2_attention(q, k, v, **geo, return_indices=True)
        o, selected = triton_infllm_v2_decode(
            q[:, -1:], k, v, compress_keys(k, 4, 2), None if exact else compress_keys(k, 4 * C2_FACTOR, 2 * C2_FACTOR),
            **{n: geo[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks",
                                   "topk", "exact_normalizer")}, scale=0.25)
    assert torch.equal(mask_indices(selected, 5), idx[:, :, -1:])
    want = full[:, -1:]
    assert_close("o", want, o, rtol=1e-5, atol=1e-5 * want.abs().max().item())
