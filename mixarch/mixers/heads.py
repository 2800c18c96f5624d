"""What the attention-like mixers share: head parameters and the q/k/v projections (+ QK-norm, positions)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, model_validator
from torch import nn

from mixarch.model.context import LayerContext
from mixarch.nn.norm import RMSNorm


class HeadParams(BaseModel):
    """Query/key/value heads of a layer. ``n_kv_heads`` defaults to ``n_heads`` and ``head_dim`` to
    ``d_model // n_heads`` (filled in at validation, so resolved tables are explicit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_heads: PositiveInt
    n_kv_heads: PositiveInt | None = Field(None, description="key/value heads (GQA); default n_heads")
    head_dim: PositiveInt | None = Field(None, description="default d_model // n_heads")
    qk_norm: bool = Field(False, description="per-head RMSNorm on queries and keys")
    bias: bool = Field(False, description="bias in the q/k/v projections")

    @model_validator(mode="after")
    def _complete_heads(self, info: ValidationInfo):
        n_kv = self.n_kv_heads or self.n_heads
        if self.n_heads % n_kv:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({n_kv})")
        head_dim = self.head_dim
        dims = (info.context or {}).get("dims") if info is not None else None
        if head_dim is None and dims is not None:
            if dims.d_model % self.n_heads:
                raise ValueError(f"d_model ({dims.d_model}) is not divisible by n_heads ({self.n_heads}); "
                                 f"set head_dim")
            head_dim = dims.d_model // self.n_heads
        object.__setattr__(self, "n_kv_heads", n_kv)  # frozen model: completing derived defaults
        object.__setattr__(self, "head_dim", head_dim)
        return self


class ProjectedHeads(nn.Module):
    """Base of layers that project ``x`` to q ``[B, T, H, D]`` and k, v ``[B, T, Hkv, D]``, apply per-head
    QK-norm and the layer's positional module, and project ``[B, T, H * D]`` back with ``o_proj``."""

    def __init__(self, params: HeadParams, ctx: LayerContext, positional: nn.Module):
        super().__init__()
        d, h, hkv, hd = ctx.d_model, params.n_heads, params.n_kv_heads, params.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = h, hkv, hd
        self.q_proj = nn.Linear(d, h * hd, bias=params.bias)
        self.k_proj = nn.Linear(d, hkv * hd, bias=params.bias)
        self.v_proj = nn.Linear(d, hkv * hd, bias=params.bias)
        self.o_proj = nn.Linear(h * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, ctx.norm_eps) if params.qk_norm else None
        self.k_norm = RMSNorm(hd, ctx.norm_eps) if params.qk_norm else None
        self.positional = positional

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of ``x`` ``[B, T, D]`` at ``positions`` ``[B, T]`` (normalized and position-encoded)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.positional(q, k, positions)
        return q, k, v
