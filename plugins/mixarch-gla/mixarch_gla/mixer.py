"""The ``gla`` mixer: a Gated Linear Attention layer as in Yang et al. (2023) and fla's GatedLinearAttention.

::

    q, k = x W_q, x W_k                    [B, T, H, Dk]   (H * Dk = expand_k * d_model)
    v    = x W_v                           [B, T, H, Dv]   (H * Dv = expand_v * d_model)
    g    = logsigmoid(x W_1 W_2 + b) / gate_normalizer     per key channel, low rank W_1 W_2
    o    = GLA(positional(q, k), v, g)     (mixarch_gla.ops)
    y    = (RMSNorm_head(o) * silu(x W_g)) W_o

Decode keeps the ``[B, H, Dk, Dv]`` recurrent state in ``cache.state`` (fp32; fp64 for an fp64 model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationInfo, model_validator
from torch import nn

from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.nn.norm import RMSNorm

from .ops import acc_dtype, chunk_gla, naive_recurrent_gla


class GLAParams(BaseModel):
    """Parameters of a GLA layer; key and value widths are fractions of ``d_model`` (as in fla)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_heads: PositiveInt = Field(description="heads; the key and value widths must divide into them")
    expand_k: PositiveFloat = Field(0.5, description="query/key width over all heads = expand_k * d_model")
    expand_v: PositiveFloat = Field(1.0, description="value width over all heads = expand_v * d_model")
    gate_low_rank_dim: PositiveInt = Field(16, description="rank of the forget-gate projection W_1 W_2")
    gate_normalizer: PositiveFloat = Field(16.0, description="g = logsigmoid(.) / gate_normalizer")
    clamp_min: float | None = Field(None, lt=0, description="lower bound of the log gate g (none: unclamped)")
    output_gate: bool = Field(True, description="swish output gate silu(x W_g) after the per-head RMSNorm")
    chunk_size: PositiveInt = Field(16, description="tokens per chunk of the chunked form (prefill, training)")

    def head_dims(self, d_model: int) -> tuple[int, int]:
        """``(head_k_dim, head_v_dim)`` for a model of width ``d_model``; ValueError if they do not divide."""
        out = []
        for name, expand in (("expand_k", self.expand_k), ("expand_v", self.expand_v)):
            width = d_model * expand
            if abs(width - round(width)) > 1e-9:
                raise ValueError(f"{name} * d_model = {expand:g} * {d_model} = {width:g} is not a whole number "
                                 f"of channels")
            if round(width) % self.n_heads:
                raise ValueError(f"{name} * d_model = {round(width)} channels do not divide into n_heads "
                                 f"({self.n_heads}) heads")
            out.append(round(width) // self.n_heads)
        return out[0], out[1]

    @model_validator(mode="after")
    def _check_dims(self, info: ValidationInfo):
        dims = (info.context or {}).get("dims") if info is not None else None
        if dims is not None:
            self.head_dims(dims.d_model)
        return self


class GatedLinearAttention(nn.Module):
    """``forward(x [B, T, D], *, positions [B, T], cache, cu_seqlens) -> [B, T, D]``."""

    def __init__(self, params: GLAParams, ctx: LayerContext, positional: nn.Module):
        super().__init__()
        d, h = ctx.d_model, params.n_heads
        hk, hv = params.head_dims(d)
        self.n_heads, self.head_k_dim, self.head_v_dim = h, hk, hv
        self.gate_normalizer, self.clamp_min, self.chunk_size = params.gate_normalizer, params.clamp_min, \
            params.chunk_size
        self.q_proj = nn.Linear(d, h * hk, bias=False)
        self.k_proj = nn.Linear(d, h * hk, bias=False)
        self.v_proj = nn.Linear(d, h * hv, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d, params.gate_low_rank_dim, bias=False),
                                     nn.Linear(params.gate_low_rank_dim, h * hk, bias=True))
        self.g_proj = nn.Linear(d, h * hv, bias=False) if params.output_gate else None
        self.g_norm = RMSNorm(hv, ctx.norm_eps)
        self.o_proj = nn.Linear(h * hv, d, bias=False)
        self.positional = positional

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        h, hk, hv = self.n_heads, self.head_k_dim, self.head_v_dim
        acc = acc_dtype(x.dtype)  # fp32 (fp64 for fp64 models) from the gate to the output projection
        q = self.q_proj(x).view(b, t, h, hk)
        k = self.k_proj(x).view(b, t, h, hk)
        v = self.v_proj(x).view(b, t, h, hv)
        g = F.logsigmoid(self.gk_proj(x).to(acc)) / self.gate_normalizer
        if self.clamp_min is not None:
            g = g.clamp_min(self.clamp_min)
        g = g.view(b, t, h, hk)
        q, k = self.positional(q, k, positions)
        if cache is not None and cu_seqlens is not None:
            raise ValueError("gla: cu_seqlens (packed sequences) cannot be combined with a decode cache")
        pad = cache.is_pad(t) if cache is not None else None
        if pad is not None:  # left padding: zero k and v so the state stays zero until the row's first token
            k = k.masked_fill(pad[..., None, None], 0.0)
            v = v.masked_fill(pad[..., None, None], 0.0)
        state = cache.state if cache is not None else None
        q, k, v = q.to(acc), k.to(acc), v.to(acc)
        if t == 1 and cu_seqlens is None:  # decode step
            o, state = naive_recurrent_gla(q, k, v, g, initial_state=state, output_final_state=cache is not None)
        else:
            o, state = chunk_gla(q, k, v, g, initial_state=state, output_final_state=cache is not None,
                                 cu_seqlens=cu_seqlens, chunk_size=self.chunk_size)
        if cache is not None:
            cache.state = state  # [B, H, Dk, Dv] in acc; the model, not the mixer, advances cache.seen_tokens
        o = self.g_norm(o)  # per head, over Dv
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x).view(b, t, h, hv).to(acc))
        return self.o_proj(o.reshape(b, t, h * hv).to(x.dtype))

    def extra_repr(self) -> str:
        return f"heads={self.n_heads}, head_k_dim={self.head_k_dim}, head_v_dim={self.head_v_dim}"


def make_gla(params: GLAParams, ctx: LayerContext, positional: nn.Module) -> GatedLinearAttention:
    return GatedLinearAttention(params, ctx, positional)
