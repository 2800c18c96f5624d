"""Built-in ``lightning``: the Lightning-attention linear layer of MiniCPM-SALA and HypeNet.

x -> q, k, v projections -> per-head QK RMSNorm -> positional (RoPE under HyPE) -> fp32 Lightning attention
(per-head decay lambda_h = exp(-s_h), ALiBi slopes s_h) -> RMSNorm over all heads jointly -> sigmoid output
gate sigma(x W_z) -> output projection. KV heads are un-shared by default (``n_kv_heads = n_heads``), as SALA
and HypeNet expand the teacher's GQA K/V to MHA. Decode keeps a ``[B, H, D, D]`` fp32 state per layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, model_validator
from torch import nn

from mixarch.hookspecs import hookimpl
from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.nn.norm import RMSNorm
from mixarch.ops.lightning import alibi_slopes, lightning_attention
from mixarch.registry import CacheSpec, Dims


class LightningParams(BaseModel):
    """Parameters of a Lightning layer; ``head_dim`` defaults to ``d_model // n_heads``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_heads: PositiveInt
    n_kv_heads: PositiveInt | None = Field(None, description="key/value heads; default n_heads (un-shared)")
    head_dim: PositiveInt | None = None
    qk_norm: bool = Field(True, description="per-head RMSNorm on queries and keys")
    output_norm: bool = Field(True, description="RMSNorm over all heads of the attention output")
    output_gate: bool = Field(True, description="sigmoid output gate o * sigmoid(x W_z)")
    decay: Literal["alibi", "alibi_layer_scaled"] = Field(
        "alibi", description="alibi: s_h = ALiBi slope (SALA, HypeNet); alibi_layer_scaled: MiniMax-01's "
                             "s_h * (1 - l / (L - 1) + 1e-5)")
    chunk_size: PositiveInt = Field(64, description="block size of the chunked form")
    bias: bool = False

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo):
        n_kv = self.n_kv_heads or self.n_heads
        if self.n_heads % n_kv:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({n_kv})")
        dims = (info.context or {}).get("dims") if info is not None else None
        head_dim = self.head_dim
        if head_dim is None and dims is not None:
            if dims.d_model % self.n_heads:
                raise ValueError(f"d_model ({dims.d_model}) is not divisible by n_heads ({self.n_heads}); "
                                 f"set head_dim")
            head_dim = dims.d_model // self.n_heads
        object.__setattr__(self, "n_kv_heads", n_kv)
        object.__setattr__(self, "head_dim", head_dim)
        return self


def state_bytes(params: LightningParams, dims: Dims) -> int:
    """One ``[H, D, D]`` state per sequence, fp32 (fp64 in fp64 models)."""
    return params.n_heads * params.head_dim * params.head_dim * max(4, dims.dtype_bytes)


def attention_kv_bytes(params: LightningParams, dims: Dims) -> int:
    return 2 * params.n_kv_heads * params.head_dim * dims.dtype_bytes


def decay_slopes(params: LightningParams, ctx: LayerContext) -> torch.Tensor:
    """Per-head slopes ``s_h`` [H] (fp32, on the CPU even while a model is built on the meta device)."""
    with torch.device("cpu"):
        slopes = alibi_slopes(params.n_heads)
    if params.decay == "alibi_layer_scaled":
        depth = ctx.index / (ctx.n_layers - 1) if ctx.n_layers > 1 else 0.0
        slopes = slopes * (1 - depth + 1e-5)
    return slopes


class LightningAttention(nn.Module):
    """``forward(x [B, T, D], *, positions [B, T], cache, cu_seqlens) -> [B, T, D]``."""

    def __init__(self, params: LightningParams, ctx: LayerContext, positional: nn.Module):
        super().__init__()
        d, h, hkv, hd = ctx.d_model, params.n_heads, params.n_kv_heads, params.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim, self.chunk_size = h, hkv, hd, params.chunk_size
        self.q_proj = nn.Linear(d, h * hd, bias=params.bias)
        self.k_proj = nn.Linear(d, hkv * hd, bias=params.bias)
        self.v_proj = nn.Linear(d, hkv * hd, bias=params.bias)
        self.o_proj = nn.Linear(h * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, ctx.norm_eps) if params.qk_norm else None
        self.k_norm = RMSNorm(hd, ctx.norm_eps) if params.qk_norm else None
        self.o_norm = RMSNorm(h * hd, ctx.norm_eps) if params.output_norm else None
        self.z_proj = nn.Linear(d, h * hd, bias=False) if params.output_gate else None
        self.positional = positional
        self.slopes = decay_slopes(params, ctx).tolist()  # plain floats: nothing to materialize after meta init

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.positional(q, k, positions)
        pad = cache.is_pad(t) if cache is not None else None
        if pad is not None:  # padding tokens add nothing to the state (which starts at zero before them)
            k = k.masked_fill(pad[..., None, None], 0.0)
            v = v.masked_fill(pad[..., None, None], 0.0)
        if self.n_kv_heads != self.n_heads:
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        decay = torch.tensor(self.slopes, dtype=torch.float32, device=x.device)
        state = cache.state if cache is not None else None
        o, state = lightning_attention(q.to(acc), k.to(acc), v.to(acc), decay, initial_state=state,
                                       output_final_state=cache is not None, cu_seqlens=cu_seqlens,
                                       chunk_size=self.chunk_size)
        if cache is not None:
            cache.state = state
        o = o.reshape(b, t, self.n_heads * self.head_dim)
        if self.o_norm is not None:
            o = self.o_norm(o)
        if self.z_proj is not None:
            o = o * torch.sigmoid(self.z_proj(x).to(acc))
        return self.o_proj(o.to(x.dtype))


def make_lightning(params: LightningParams, ctx: LayerContext, positional: nn.Module) -> LightningAttention:
    return LightningAttention(params, ctx, positional)


@hookimpl
def mixarch_register_mixers(register):
    register("lightning", make_lightning, LightningParams, family="linear",
             cache=CacheSpec(holds=("state",), fixed_bytes=state_bytes),
             attention_kv_bytes_per_token=attention_kv_bytes,
             description="Lightning attention (SALA/HypeNet linear layer: QK-norm, decay, output norm + gate)")
