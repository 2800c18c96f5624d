"""Hypothesis strategies for kernel and mixer tests.

Dimensions are drawn from small mixed sets (odd ones included) and tensor values from a seeded torch
generator: element-wise drawing is slow and shrinks poorly.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

SEQ_LENS = (1, 15, 63, 64, 65, 200)
SMALL_SEQ_LENS = (1, 15, 63, 64, 65)
HEAD_COUNTS = (1, 2, 3, 5, 6)
HEAD_DIMS = (16, 32, 48)
GROUP_SIZES = (1, 2, 3, 4, 8)

seeds = st.integers(min_value=0, max_value=2**31 - 1)
seq_lens = st.sampled_from(SEQ_LENS)
small_seq_lens = st.sampled_from(SMALL_SEQ_LENS)
head_counts = st.sampled_from(HEAD_COUNTS)
head_dims = st.sampled_from(HEAD_DIMS)
group_sizes = st.sampled_from(GROUP_SIZES)


def seeded_randn(shape, seed: int, *, dtype=torch.float32, device="cpu", scale: float = 1.0) -> torch.Tensor:
    """Standard-normal tensor from a private generator seeded with ``seed`` (never zeros)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)


@st.composite
def compositions(draw, total: int, max_parts: int = 4) -> list[int]:
    """A split of ``total`` into 1..max_parts positive lengths, often including a length of 1."""
    if total <= 1:
        return [total]
    n_cuts = draw(st.integers(min_value=0, max_value=min(max_parts - 1, total - 1)))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=total - 1), min_size=n_cuts, max_size=n_cuts)))
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def cu_seqlens_from(lengths: list[int]) -> torch.Tensor:
    """``[0, l0, l0+l1, ...]`` as int32, the packed-batch boundaries used by varlen ops."""
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32)
