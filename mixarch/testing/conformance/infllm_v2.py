"""Conformance recipes for the InfLLM-V2 ops (``infllm_v2_select``, ``infllm_v2_sparse_attention``)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys
from mixarch.ops.infllm_v2.attention import reference_infllm_v2_select, sparse_block_attention
from mixarch.ops.infllm_v2.select import block_scores, stage1_scores
from mixarch.testing.conformance import Case, OpConformance, register_conformance
from mixarch.testing.strategies import seeded_randn


def _geometry(data, tiny: bool) -> dict:
    stride = data.draw(st.sampled_from([2, 4] if tiny else [4, 16]), label="kernel_stride")
    return dict(block_size=4 * stride, kernel_size=2 * stride, kernel_stride=stride,
                init_blocks=data.draw(st.sampled_from([0, 1]), label="init_blocks"),
                local_blocks=data.draw(st.sampled_from([0, 1, 2]), label="local_blocks"),
                topk=data.draw(st.sampled_from([2, 3, 5]), label="topk"))


def select_case(data, dtype: torch.dtype, device: str, tiny: bool) -> Case:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    geo = _geometry(data, tiny)
    hkv = data.draw(st.sampled_from([1, 2]), label="Hkv")
    group = data.draw(st.sampled_from([1, 2, 3] if tiny else [1, 2, 4, 8, 16]), label="G")
    d = data.draw(st.sampled_from([16] if tiny else [16, 64, 128]), label="D")
    t_k = data.draw(st.sampled_from([40, 65] if tiny else [65, 200, 513]), label="Tk")
    t_q = data.draw(st.sampled_from([1, t_k]), label="Tq")
    q = seeded_randn((1, t_q, hkv * group, d), seed, dtype=dtype, device=device)
    k = seeded_randn((1, t_k, hkv, d), seed + 1, dtype=dtype, device=device)
    exact = data.draw(st.booleans(), label="exact normalizer")
    c1 = compress_keys(k, geo["kernel_size"], geo["kernel_stride"])
    c2 = None if exact else compress_keys(k, C2_FACTOR * geo["kernel_size"], C2_FACTOR * geo["kernel_stride"])
    return Case(args=(q, c1, c2, t_k), kwargs=dict(**geo, scale=d ** -0.5, exact_normalizer=exact),
                label=f"Tq={t_q} Tk={t_k} Hkv={hkv} G={group} D={d} {geo} exact={exact}")


def check_selection(case: Case, got: dict, want: dict) -> None:
    """Same blocks, up to near-ties: any block the backend chose instead of the reference's must score (in the
    fp64 reference) within 1e-4 of the block it replaced."""
    out, ref = got["indices"].cpu(), want["indices"].cpu()
    assert out.shape == ref.shape and out.dtype == torch.int64, f"{case.label}: indices {out.shape} {out.dtype}"
    if torch.equal(out, ref):
        return
    q, c1, c2, t_k = (a.double() if isinstance(a, torch.Tensor) else a for a in case.args)
    kw = case.kwargs
    s = stage1_scores(q, c1, c2, t_k, kernel_size=kw["kernel_size"], kernel_stride=kw["kernel_stride"],
                      scale=kw["scale"], exact_normalizer=kw["exact_normalizer"])
    scores, _ = block_scores(s, t_k, block_size=kw["block_size"], kernel_size=kw["kernel_size"],
                             kernel_stride=kw["kernel_stride"], init_blocks=kw["init_blocks"],
                             local_blocks=kw["local_blocks"])
    scores = scores.cpu()
    for idx in torch.nonzero((out != ref).any(-1)).tolist():
        o, r = out[tuple(idx)], ref[tuple(idx)]
        assert (o >= 0).sum() == (r >= 0).sum(), f"{case.label}: query {idx} selects a different number of blocks"
        row = scores[tuple(idx)]
        picked = torch.sort(row[o[o >= 0]]).values
        best = torch.sort(row[r[r >= 0]]).values
        assert torch.allclose(picked, best, atol=1e-4, rtol=0), f"{case.label}: query {idx} picks {o} not {r}"


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
