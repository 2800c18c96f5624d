"""Rotary position embedding (rotate-half convention), computed on the fly from absolute positions."""

from __future__ import annotations

import torch


def rotary_angles(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``positions * theta ** (-2i / dim)``, each ``[*positions.shape, dim // 2]`` in fp32."""
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
    angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` channels of ``x`` [B, T, H, D] by angles given as ``cos``, ``sin``
    [B, T, rotary_dim / 2] (from :func:`rotary_angles`). Rotate-half convention: channel ``i`` pairs with
    ``i + rotary_dim / 2``. Computed in fp32, returned in ``x``'s dtype."""
    dim = 2 * cos.shape[-1]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    xf = x.float()
    x1, x2, rest = xf[..., : dim // 2], xf[..., dim // 2:dim], xf[..., dim:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1).to(x.dtype)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, theta: float, rotary_dim: int | None = None) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` channels (default: all) of ``x`` [B, T, H, D] by the angles of
    ``positions`` [B, T] (see :func:`rotate`)."""
    dim = x.shape[-1] if rotary_dim is None else rotary_dim
    return rotate(x, *rotary_angles(positions, dim, theta))
