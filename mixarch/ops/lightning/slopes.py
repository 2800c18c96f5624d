"""ALiBi slopes, the per-head decay rates of Lightning attention (``lambda_h = exp(-s_h)``)."""

from __future__ import annotations

import math

import torch


def _power_of_two_slopes(n: int) -> list[float]:
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi slopes ``[n_heads]`` (fp32, decreasing within each run).

    For ``H`` a power of two, ``s_h = 2^(-8 (h+1) / H)``. Otherwise the slopes for ``P``, the largest power of two
    below ``H``, followed by the even-indexed slopes (0, 2, 4, ...) for ``2P``, truncated to ``H`` in all
    (the ALiBi paper's rule). E.g. ``H = 6``: ``2^-2, 2^-4, 2^-6, 2^-8, 2^-1, 2^-3``.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = _power_of_two_slopes(p)
    if p != n_heads:
        slopes += _power_of_two_slopes(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)
