"""Conformance recipes for the InfLLM-V2 ops (``infllm_v2_select``, ``infllm_v2_sparse_attention``,
``infllm_v2_decode``)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys
from mixarch.ops.infllm_v2.attention import (
    mask_indices,
    reference_infllm_v2_decode,
    reference_infllm_v2_select,
    sparse_block_attention,
    stage2_forcing,
)
from mixarch.ops.infllm_v2.select import block_scores, stage1_scores
from mixarch.testing.conformance import Case, OpConformance, compare, register_conformance
from mixarch.testing.strategies import seeded_randn


def _geometry(data, tiny: bool) -> dict:
    stride = data.draw(st.sampled_from([2, 4] if tiny else [4, 16]), label="kernel_stride")
    return dict(block_size=4 * stride, kernel_size=2 * stride, kernel_stride=stride,
                init_blocks=data.draw(st.sampled_from([0, 1]), label="init_blocks"),
                local_blocks=data.draw(st.sampled_from([0, 1, 2]), label="local_blocks"),
                topk=data.draw(st.sampled_from([2, 3, 5]), label="topk"))


def _stage1_draw(data, tiny: bool) -> tuple[dict, dict]:
    """``(shapes, kwargs)`` of a selection: ``Hkv``, ``G``, ``D``, ``Tk``; the geometry, scale and normalizer."""
    geo = _geometry(data, tiny)
    shapes = dict(Hkv=data.draw(st.sampled_from([1, 2]), label="Hkv"),
                  G=data.draw(st.sampled_from([1, 2, 3] if tiny else [1, 2, 4, 8, 16]), label="G"),
                  D=data.draw(st.sampled_from([16] if tiny else [16, 64, 128]), label="D"),
                  Tk=data.draw(st.sampled_from([40, 65] if tiny else [65, 200, 513]), label="Tk"))
    exact = data.draw(st.booleans(), label="exact normalizer")
    return shapes, dict(**geo, scale=shapes["D"] ** -0.5, exact_normalizer=exact)


def _compressed(k: torch.Tensor, kw: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The C1 and (approximate normalizer) C2 compressed keys of ``k``."""
    size, stride = kw["kernel_size"], kw["kernel_stride"]
    c2 = None if kw["exact_normalizer"] else compress_keys(k, C2_FACTOR * size, C2_FACTOR * stride)
    return compress_keys(k, size, stride), c2


def select_case(data, dtype: torch.dtype, device: str, tiny: bool) -> Case:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    shapes, kw = _stage1_draw(data, tiny)
    hkv, d, t_k = shapes["Hkv"], shapes["D"], shapes["Tk"]
    t_q = data.draw(st.sampled_from([1, t_k]), label="Tq")
    q = seeded_randn((1, t_q, hkv * shapes["G"], d), seed, dtype=dtype, device=device)
    k = seeded_randn((1, t_k, hkv, d), seed + 1, dtype=dtype, device=device)
    return Case(args=(q, *_compressed(k, kw), t_k), kwargs=kw, label=f"Tq={t_q} {shapes} {kw}")


def check_selection(case: Case, got: dict, want: dict) -> None:
    """Same blocks, up to near-ties: any block the backend chose instead of the reference's must score (in the
    fp64 reference) within 1e-4 of the block it replaced."""
    _same_blocks(case.label, got["indices"].cpu(), want["indices"].cpu(), case.args, case.kwargs)


def _same_blocks(label: str, out: torch.Tensor, ref: torch.Tensor, select_args: tuple, kw: dict) -> None:
    """:func:`check_selection` of index rows ``out`` against ``ref``; ``select_args`` = ``(q, C1, C2, Tk)``."""
    assert out.shape == ref.shape and out.dtype == torch.int64, f"{label}: indices {out.shape} {out.dtype}"
    if torch.equal(out, ref):
        return
    q, c1, c2, t_k = (a.double() if isinstance(a, torch.Tensor) else a for a in select_args)
    s = stage1_scores(q, c1, c2, t_k, kernel_size=kw["kernel_size"], kernel_stride=kw["kernel_stride"],
                      scale=kw["scale"], exact_normalizer=kw["exact_normalizer"])
    scores, _ = block_scores(s, t_k, block_size=kw["block_size"], kernel_size=kw["kernel_size"],
                             kernel_stride=kw["kernel_stride"], init_blocks=kw["init_blocks"],
                             local_blocks=kw["local_blocks"])
    scores = scores.cpu()
    for idx in torch.nonzero((out != ref).any(-1)).tolist():
        o, r = out[tuple(idx)], ref[tuple(idx)]
        assert (o >= 0).sum() == (r >= 0).sum(), f"{label}: query {idx} selects a different number of blocks"
        row = scores[tuple(idx)]
        picked = torch.sort(row[o[o >= 0]]).values
        best = torch.sort(row[r[r >= 0]]).values
        assert torch.allclose(picked, best, atol=1e-4, rtol=0), f"{label}: query {idx} picks {o} not {r}"


def sparse_case(data, dtype: torch.dtype, device: str, tiny: bool) -> Case:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    block = data.draw(st.sampled_from([4, 16] if tiny else [16, 64]), label="block_size")
    hkv = data.draw(st.sampled_from([1, 2]), label="Hkv")
    group = data.draw(st.sampled_from([1, 2, 3] if tiny else [1, 2, 4, 8, 16]), label="G")
    d = data.draw(st.sampled_from([16] if tiny else [16, 64, 128]), label="D")
    # Tk = 1 and single-key queries included: their dq and dk vanish exactly in the reference but only to rounding
    # in a kernel; check_backend's gradient comparison scales the tolerance by the loss's largest gradient
    t_k = data.draw(st.sampled_from([1, 15, 40] if tiny else [1, 63, 65, 300]), label="Tk")
    t_q = data.draw(st.sampled_from([1, t_k]), label="Tq")
    topk = data.draw(st.sampled_from([1, 2, 4]), label="topk")
    q = seeded_randn((1, t_q, hkv * group, d), seed, dtype=dtype, device=device)
    k = seeded_randn((1, t_k, hkv, d), seed + 1, dtype=dtype, device=device)
    v = seeded_randn((1, t_k, hkv, d), seed + 2, dtype=dtype, device=device)
    # forced blocks besides the selection (none; init only; init + local window), which may or may not hold them
    init, local = data.draw(st.sampled_from([(0, None), (1, None), (1, 0), (0, 2), (1, 2)]), label="forcing")
    # random valid selections: the query's own block plus random earlier blocks, ascending (the selection's
    # format) or shuffled (any order is allowed), -1 padded
    shuffled = data.draw(st.booleans(), label="shuffled")
    gen = torch.Generator().manual_seed(seed)
    pos = torch.arange(t_k - t_q, t_k)
    idx = torch.full((1, hkv, t_q, topk), -1, dtype=torch.int64)
    for h in range(hkv):
        for i, t in enumerate(pos.tolist()):
            own = t // block
            others = torch.randperm(own, generator=gen)[: topk - 1] if own else torch.empty(0, dtype=torch.int64)
            chosen = torch.sort(torch.cat([others, torch.tensor([own])])).values
            if shuffled:
                chosen = chosen[torch.randperm(len(chosen), generator=gen)]
            idx[0, h, i, : len(chosen)] = chosen
    return Case(args=(q, k, v, idx.to(device)),
                kwargs=dict(block_size=block, scale=None, init_blocks=init, local_blocks=local), grad_args=(0, 1, 2),
                label=f"Tq={t_q} Tk={t_k} Hkv={hkv} G={group} D={d} block={block} topk={topk} init={init} "
                      f"local={local} shuffled={shuffled}")


register_conformance(OpConformance(
    op="infllm_v2_select", make_case=select_case, reference=reference_infllm_v2_select,
    outputs=lambda r: {"indices": r}, differentiable=False, check=check_selection))
register_conformance(OpConformance(
    op="infllm_v2_sparse_attention", make_case=sparse_case, reference=sparse_block_attention,
    outputs=lambda r: {"o": r}))


def decode_case(data, dtype: torch.dtype, device: str, tiny: bool) -> Case:
    """One query per sequence (``B`` of 1 or 2) at the last of ``Tk`` positions, with its keys' C1 (and C2)."""
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    shapes, kw = _stage1_draw(data, tiny)
    b = data.draw(st.sampled_from([1, 2]), label="B")
    hkv, d, t_k = shapes["Hkv"], shapes["D"], shapes["Tk"]
    q = seeded_randn((b, 1, hkv * shapes["G"], d), seed, dtype=dtype, device=device)
    k = seeded_randn((b, t_k, hkv, d), seed + 1, dtype=dtype, device=device)
    v = seeded_randn((b, t_k, hkv, d), seed + 2, dtype=dtype, device=device)
    return Case(args=(q, k, v, *_compressed(k, kw)), kwargs=kw, label=f"B={b} {shapes} {kw}")


def check_decode(case: Case, got: dict, want: dict) -> None:
    """The backend's selection equals the reference's up to near-ties (:func:`check_selection`), and its output
    equals the fp64 stage 2 over the blocks it selected."""
    q, k, v, c1, c2 = case.args
    kw = case.kwargs
    out_idx, ref_idx = (mask_indices(r["selected"].cpu(), kw["topk"]) for r in (got, want))
    _same_blocks(case.label, out_idx, ref_idx, (q, c1, c2, k.shape[1]), kw)
    o = sparse_block_attention(q.double(), k.double(), v.double(), out_idx.to(q.device), block_size=kw["block_size"],
                               scale=kw["scale"], **stage2_forcing(kw["init_blocks"], kw["local_blocks"], kw["topk"]))
    compare(DECODE, f"infllm_v2_decode {case.label}: o", o, got["o"], q.dtype)


DECODE = register_conformance(OpConformance(
    op="infllm_v2_decode", make_case=decode_case, reference=reference_infllm_v2_decode,
    outputs=lambda r: {"o": r[0], "selected": r[1]}, differentiable=False, check=check_decode))
