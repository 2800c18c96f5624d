"""Causal sliding-window softmax attention, layout ``[B, T, H, D]``: thin wrappers over :mod:`mixarch.ops.softmax`.

Each query sees its ``window`` most recent keys, its own included (queries are the last ``Tq`` of ``Tk``
positions, so decode and chunked prefill share the rule).
"""

from __future__ import annotations

import operator

import torch

from mixarch.ops.softmax import naive_softmax_attention, softmax_attention


def _window(window) -> int:
    try:
        if isinstance(window, bool):
            raise TypeError
        w = operator.index(window)
    except TypeError:
        raise ValueError(f"window must be an integer >= 1, got {window!r}") from None
    if w < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    return w


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                             scale: float | None = None, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Causal (GQA) attention over the ``window`` most recent keys (own key included).

    Args and return as :func:`mixarch.ops.softmax.softmax_attention`; ``window`` must be an integer >= 1
    (``window >= Tk`` is plain causal attention).
    """
    return softmax_attention(q, k, v, scale=scale, window=_window(window), cu_seqlens=cu_seqlens)


def naive_sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                                   scale: float | None = None,
                                   cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Explicit-mask reference for :func:`sliding_window_attention` (fp32; fp64 for fp64 input)."""
    return naive_softmax_attention(q, k, v, scale=scale, window=_window(window), cu_seqlens=cu_seqlens)
