"""Built-in FFNs: SwiGLU and ``none`` (a block with a mixer only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from mixarch.hookspecs import hookimpl


class SwiGLUParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hidden_size: PositiveInt | None = Field(
        None, description="inner width; default 8/3 * d_model rounded up to a multiple of `multiple_of`")
    multiple_of: PositiveInt = 256
    bias: bool = False

    def inner(self, d_model: int) -> int:
        if self.hidden_size is not None:
            return self.hidden_size
        raw = int(8 * d_model / 3)
        return -(-raw // self.multiple_of) * self.multiple_of


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with ``x`` [B, T, D] -> [B, T, D]."""

    def __init__(self, d_model: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def make_swiglu(params: SwiGLUParams, ctx) -> SwiGLU:
    return SwiGLU(ctx.d_model, params.inner(ctx.d_model), params.bias)


def make_none(params: NoParams, ctx) -> None:
    return None


@hookimpl
def mixarch_register_ffns(register):
    register("swiglu", make_swiglu, SwiGLUParams, description="SwiGLU MLP (gate, up, down)")
    register("none", make_none, NoParams, description="no FFN sublayer")
