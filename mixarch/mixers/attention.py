"""Built-in ``attention``: causal softmax attention (GQA) through torch SDPA.

Options: per-head QK RMSNorm, sigmoid output gate (``o * sigmoid(x W_g)`` before the output projection),
a sliding window. The positional module of the layer (RoPE, NoPE, HyPE, ...) is applied to q and k.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, model_validator
from torch import nn

from mixarch.hookspecs import hookimpl
from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.nn.norm import RMSNorm
from mixarch.ops.softmax import softmax_attention
from mixarch.registry import CacheSpec, Dims


class AttentionParams(BaseModel):
    """Parameters of a softmax attention layer. ``head_dim`` defaults to ``d_model // n_heads``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_heads: PositiveInt
    n_kv_heads: PositiveInt | None = Field(None, description="key/value heads (GQA); default n_heads")
    head_dim: PositiveInt | None = Field(None, description="default d_model // n_heads")
    qk_norm: bool = Field(False, description="per-head RMSNorm on queries and keys")
    output_gate: bool = Field(False, description="sigmoid output gate o * sigmoid(x W_g)")
    bias: bool = Field(False, description="bias in the q/k/v projections")
    window: PositiveInt | None = Field(None, description="sliding window (keys visible per query); none: full")

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo):
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
        object.__setattr__(self, "n_kv_heads", n_kv)
        object.__setattr__(self, "head_dim", head_dim)
        return self


def kv_bytes_per_token(params: AttentionParams, dims: Dims) -> int:
    """K and V of one token: ``2 * n_kv_heads * head_dim`` elements."""
    return 2 * params.n_kv_heads * params.head_dim * dims.dtype_bytes


def windowed_kv_bytes(params: AttentionParams, dims: Dims, seq_len: int) -> int:
    kept = seq_len if params.window is None else min(seq_len, params.window)
    return kv_bytes_per_token(params, dims) * kept


class SoftmaxAttention(nn.Module):
    """Causal GQA softmax attention; ``forward(x [B, T, D], *, positions [B, T], cache, cu_seqlens) -> [B, T, D]``."""

    def __init__(self, params: AttentionParams, ctx: LayerContext, positional: nn.Module):
        super().__init__()
        d, h, hkv, hd = ctx.d_model, params.n_heads, params.n_kv_heads, params.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim, self.window = h, hkv, hd, params.window
        self.q_proj = nn.Linear(d, h * hd, bias=params.bias)
        self.k_proj = nn.Linear(d, hkv * hd, bias=params.bias)
        self.v_proj = nn.Linear(d, hkv * hd, bias=params.bias)
        self.o_proj = nn.Linear(h * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, ctx.norm_eps) if params.qk_norm else None
        self.k_norm = RMSNorm(hd, ctx.norm_eps) if params.qk_norm else None
        self.g_proj = nn.Linear(d, h * hd, bias=False) if params.output_gate else None
        self.positional = positional

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.positional(q, k, positions)
        key_valid = None
        if cache is not None:
            k, v = cache.append_kv(k, v, window=self.window)
            key_valid = cache.key_mask(k.shape[1], t)
        o = softmax_attention(q, k, v, window=self.window, cu_seqlens=cu_seqlens, key_valid=key_valid)
        o = o.reshape(b, t, self.n_heads * self.head_dim)
        if self.g_proj is not None:
            o = o * torch.sigmoid(self.g_proj(x))
        return self.o_proj(o)


def make_attention(params: AttentionParams, ctx: LayerContext, positional: nn.Module) -> SoftmaxAttention:
    return SoftmaxAttention(params, ctx, positional)


ATTENTION_CACHE = CacheSpec(holds=("key", "value"), bytes_per_token=kv_bytes_per_token, bytes_at=windowed_kv_bytes)


@hookimpl
def mixarch_register_mixers(register):
    register("attention", make_attention, AttentionParams, family="softmax", cache=ATTENTION_CACHE,
             attention_kv_bytes_per_token=kv_bytes_per_token,
             description="causal softmax attention (SDPA, GQA, optional QK-norm, output gate, window)")
