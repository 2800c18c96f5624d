"""The positional-encoding interface every mixer receives."""

from __future__ import annotations

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """Transforms queries and keys of one layer given absolute positions.

    ``forward(q [B, T, Hq, D], k [B, T, Hk, D], positions [B, T]) -> (q, k)``. ``label`` is a short
    description for layer tables (e.g. ``rope(θ=10000)``).
    """

    label = "positional"

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError


class NoPE(PositionalEncoding):
    """No positional information: queries and keys pass through unchanged."""

    label = "nope"

    def forward(self, q, k, positions):
        return q, k
