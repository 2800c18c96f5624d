"""Conformance recipes for the Lightning attention ops (``lightning_attention``, ``lightning_step``)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from mixarch.ops.lightning import alibi_slopes, naive_lightning_attention, reference_lightning_step
from mixarch.testing.conformance import Case, OpConformance, register_conformance
from mixarch.testing.strategies import compositions, cu_seqlens_from, seeded_randn


def _heads_dims(data, tiny: bool) -> tuple[int, int, int]:
    h = data.draw(st.sampled_from([1, 3] if tiny else [1, 3, 4, 6]), label="H")
    dk = data.draw(st.sampled_from([16] if tiny else [16, 32, 64, 128]), label="Dk")
    dv = data.draw(st.sampled_from([16, 32] if tiny else [16, 32, 64, 128]), label="Dv")
    return h, dk, dv


def lightning_case(data, dtype: torch.dtype, device: str, tiny: bool) -> Case:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    h, dk, dv = _heads_dims(data, tiny)
    t = data.draw(st.sampled_from([1, 15, 33] if tiny else [1, 15, 63, 64, 65, 200, 1000]), label="T")
    varlen = data.draw(st.booleans(), label="varlen") and t > 1
    lengths = data.draw(compositions(t), label="lengths") if varlen else [t]
    b = 1 if varlen else data.draw(st.sampled_from([1, 2]), label="B")
    n = len(lengths) if varlen else b
    # x512: decays of 2 to 128 per token, whose weights underflow to exact zeros within a chunk (kernels may skip
    # such chunks: mixarch's Triton state passes do)
    strength = data.draw(st.sampled_from([0.1, 1.0, 4.0, 512.0]), label="decay strength")
    q, k = (seeded_randn((b, t, h, dk), seed + i, dtype=dtype, device=device) for i in (0, 1))
    v = seeded_randn((b, t, h, dv), seed + 2, dtype=dtype, device=device)
    decay = (alibi_slopes(h) * strength).to(device)
    with_state = data.draw(st.booleans(), label="initial state")
    h0 = seeded_randn((n, h, dk, dv), seed + 3, dtype=torch.float32, device=device) if with_state else None
    chunk = data.draw(st.sampled_from([16, 64]), label="chunk")
    kwargs = dict(scale=None, initial_state=h0, output_final_state=data.draw(st.booleans(), label="final state"),
                  cu_seqlens=cu_seqlens_from(lengths).to(device) if varlen else None, chunk_size=chunk)
    label = f"B={b} T={t} H={h} Dk={dk} Dv={dv} lengths={lengths} decay x{strength} state={with_state}"
    # the initial state is a keyword argument: pass it positionally-free but differentiable through args
    return Case(args=(q, k, v, decay), kwargs=kwargs, grad_args=(0, 1, 2), label=label)


def lightning_reference(q, k, v, decay, **kwargs):
    kwargs.pop("chunk_size", None)
    return naive_lightning_attention(q, k, v, decay, **kwargs)


def step_case(data, dtype: torch.dtype, device: str, tiny: bool) -> Case:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    h, dk, dv = _heads_dims(data, tiny)
    b = data.draw(st.sampled_from([1, 2, 5]), label="B")
    q, k = (seeded_randn((b, 1, h, dk), seed + i, dtype=dtype, device=device) for i in (0, 1))
    v = seeded_randn((b, 1, h, dv), seed + 2, dtype=dtype, device=device)
    state = seeded_randn((b, h, dk, dv), seed + 3, dtype=torch.float32, device=device)
    decay = alibi_slopes(h).to(device)
    return Case(args=(q, k, v, decay, state), label=f"B={b} H={h} Dk={dk} Dv={dv}")


register_conformance(OpConformance(
    op="lightning_attention", make_case=lightning_case, reference=lightning_reference,
    outputs=lambda r: {"o": r[0], "final_state": r[1]}))
register_conformance(OpConformance(
    op="lightning_step", make_case=step_case, reference=reference_lightning_step,
    outputs=lambda r: {"o": r[0], "state": r[1]}, differentiable=False))
