"""Rotary embedding: against a complex-number reference, partial rotation, and the relative-position property."""

from __future__ import annotations

import pytest
import torch

from mixarch.nn.rotary import apply_rotary
from mixarch.positional.rope import RoPE
from mixarch.testing.compare import assert_close
from mixarch.testing.strategies import seeded_randn


def complex_reference(x: torch.Tensor, positions: torch.Tensor, theta: float, dim: int) -> torch.Tensor:
    """fp64: channel pairs (i, i + dim/2) as complex numbers times exp(i * p * theta^(-2i/dim))."""
    x = x.double()
    half = dim // 2
    freq = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / dim)
    z = torch.complex(x[..., :half], x[..., half:dim]) * torch.polar(
        torch.ones((), dtype=torch.float64), positions.double()[..., None] * freq)[..., None, :]
    return torch.cat((z.real, z.imag, x[..., dim:]), dim=-1)


@pytest.mark.parametrize("dim, rotary_dim", [(8, None), (16, 8), (6, 2)])
@pytest.mark.parametrize("theta", [10000.0, 500.0])
def test_matches_the_complex_reference(dim, rotary_dim, theta):
    x = seeded_randn((2, 7, 3, dim), 0)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [9, 10, 11, 12, 13, 14, 100000]])
    out = apply_rotary(x, positions, theta, rotary_dim)
    assert_close("rotary", complex_reference(x, positions, theta, rotary_dim or dim), out.double())
    if rotary_dim:
        assert torch.equal(out[..., rotary_dim:], x[..., rotary_dim:])


def test_scores_depend_on_the_position_difference_only():
    rope = RoPE(10000.0)
    q, k = seeded_randn((1, 1, 2, 16), 1), seeded_randn((1, 1, 2, 16), 2)

    def score(pq, pk):
        rq, _ = rope(q, q, torch.tensor([[pq]]))
        _, rk = rope(k, k, torch.tensor([[pk]]))
        return (rq * rk).sum(-1)

    assert_close("relative", score(5, 3).double(), score(1005, 1003).double(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(score(5, 3), score(5, 4))


def test_rope_rotates_queries_and_keys_alike():
    q, k = seeded_randn((2, 5, 4, 8), 3), seeded_randn((2, 5, 1, 8), 4)
    positions = torch.arange(5).expand(2, 5) + torch.tensor([[0], [7]])
    rq, rk = RoPE(500.0, rotary_dim=4)(q, k, positions)
    assert torch.equal(rq, apply_rotary(q, positions, 500.0, 4)) and torch.equal(rk, apply_rotary(k, positions, 500.0, 4))
