"""RMSNorm against the fp64 formula ``x / sqrt(mean(x^2) + eps) * weight``, for every input dtype, values and
gradients."""

from __future__ import annotations

import pytest
import torch

from mixarch.nn.norm import RMSNorm
from mixarch.testing.compare import assert_close, assert_close_rel
from mixarch.testing.strategies import seeded_randn


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 15, 64), (3, 65, 33)])
def test_matches_the_formula(dtype, shape):
    norm = RMSNorm(shape[-1], eps=1e-5)
    if dtype == torch.float64:  # an fp64 model: fp64 weights too (16-bit and fp32 models keep fp32 norm weights)
        norm = norm.double()
    with torch.no_grad():
        norm.weight.copy_(seeded_randn((shape[-1],), 1))
    x = (seeded_randn(shape, 0) * 3).to(dtype).requires_grad_()
    out = norm(x)
    assert out.dtype == dtype
    ref_x = x.detach().double().requires_grad_()
    ref_w = norm.weight.detach().double().requires_grad_()
    ref = reference(ref_x, ref_w, 1e-5)
    upstream = seeded_randn(shape, 2, dtype=torch.float64)
    dx, dw = torch.autograd.grad((out.double() * upstream).sum(), [x, norm.weight])
    rdx, rdw = torch.autograd.grad((ref * upstream).sum(), [ref_x, ref_w])
    if dtype in (torch.float64, torch.float32):  # computed in fp64 for fp64 inputs, else in fp32
        for name, r, o in (("out", ref, out), ("dx", rdx, dx), ("dweight", rdw, dw)):
            assert_close(name, r.detach(), o.double(), rtol=1e-12 if dtype == torch.float64 else 1e-5,
                         atol=(1e-12 if dtype == torch.float64 else 1e-5) * r.abs().max().item())
    else:
        assert_close_rel("out", ref.detach(), out)
        assert_close_rel("dx", rdx, dx)
