"""Built-in ``short_conv``: a gated causal depthwise convolution over the last few tokens (zoology's BaseConv).

    y = W_o((W_in x) ⊙ conv_k(x)),   conv_k(x)_t = Σ_{i<k} w_i ⊙ x_{t-i} + b

Zoology interleaves one with every sequence mixer (the "BASED recipe"): it gives each position its neighbours,
so attention can do associative recall with one layer instead of first learning a previous-token circuit.
Decode keeps the last ``kernel_size - 1`` inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from mixarch.hookspecs import hookimpl
from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.registry import CacheSpec, Dims


class ShortConvParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kernel_size: PositiveInt = Field(4, description="tokens the convolution sees, the current one included")
    gate: bool = Field(True, description="multiply by a linear projection of x (BaseConv); off: conv only")


def tail_bytes(params: ShortConvParams, dims: Dims) -> int:
    """The last ``kernel_size - 1`` inputs, ``[kernel_size - 1, d_model]`` per sequence."""
    return (params.kernel_size - 1) * dims.d_model * dims.dtype_bytes


class ShortConv(nn.Module):
    """``forward(x [B, T, D], *, positions, cache, cu_seqlens) -> [B, T, D]`` (positions unused)."""

    def __init__(self, params: ShortConvParams, ctx: LayerContext, positional: nn.Module):
        super().__init__()
        d, self.kernel_size = ctx.d_model, params.kernel_size
        self.weight = nn.Parameter(torch.empty(d, params.kernel_size))  # [D, k]; column k-1 is the current token
        self.bias = nn.Parameter(torch.empty(d))
        self.in_proj = nn.Linear(d, d, bias=False) if params.gate else None
        self.o_proj = nn.Linear(d, d, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.device.type != "meta":
            nn.init.uniform_(self.weight, -self.kernel_size ** -0.5, self.kernel_size ** -0.5)
            nn.init.zeros_(self.bias)

    def conv(self, x: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Causal depthwise conv of ``x`` [B, T, D] preceded by ``history`` [B, k-1, D] (earlier inputs)."""
        full = torch.cat((history, x), dim=1).transpose(1, 2)  # [B, D, k-1+T]
        return F.conv1d(full, self.weight.unsqueeze(1), self.bias, groups=x.shape[-1]).transpose(1, 2)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        k1 = self.kernel_size - 1
        if cache is not None:
            pad = cache.is_pad(t)
            if pad is not None:  # padding contributes nothing, like the zeros before a sequence's first token
                x_in = x.masked_fill(pad[..., None], 0.0)
            else:
                x_in = x
            history = cache.extras.get("conv_tail")
            if history is None:
                history = x.new_zeros((b, k1, d))
            y = self.conv(x_in, history)
            cache.extras["conv_tail"] = torch.cat((history, x_in), dim=1)[:, history.shape[1] + t - k1:]
        elif cu_seqlens is not None:  # packed sequences: each starts from zeros
            bounds = cu_seqlens.tolist()
            y = torch.cat([self.conv(x[:, s:e], x.new_zeros((b, k1, d))) for s, e in zip(bounds[:-1], bounds[1:])],
                          dim=1)
        else:
            y = self.conv(x, x.new_zeros((b, k1, d)))
        if self.in_proj is not None:
            y = y * self.in_proj(x)
        return self.o_proj(y)



@hookimpl
def mixarch_register_mixers(register):
    register("short_conv", ShortConv, ShortConvParams, family="conv",
             cache=CacheSpec(holds=("conv_tail",), fixed_bytes=tail_bytes),
             description="gated causal depthwise short convolution (zoology's BaseConv)")
