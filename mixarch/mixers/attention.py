"""Built-in ``attention``: causal softmax attention (GQA) through torch SDPA.

Options: per-head QK RMSNorm, sigmoid output gate (``o * sigmoid(x W_g)`` before the output projection),
a sliding window. The positional module of the layer (RoPE, NoPE, HyPE, ...) is applied to q and k.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from mixarch.hookspecs import hookimpl
from mixarch.mixers.heads import HeadParams, ProjectedHeads
from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.ops.softmax import softmax_attention
from mixarch.registry import CacheSpec, Dims


class AttentionParams(HeadParams):
    """Parameters of a softmax attention layer (heads as :class:`HeadParams`)."""

    output_gate: bool = Field(False, description="sigmoid output gate o * sigmoid(x W_g)")
    window: PositiveInt | None = Field(None, description="sliding window (keys visible per query); none: full")


def kv_bytes_per_token(params: AttentionParams, dims: Dims) -> int:
    """K and V of one token: ``2 * n_kv_heads * head_dim`` elements."""
    return 2 * params.n_kv_heads * params.head_dim * dims.dtype_bytes


def windowed_kv_bytes(params: AttentionParams, dims: Dims, seq_len: int) -> int:
    kept = seq_len if params.window is None else min(seq_len, params.window)
    return kv_bytes_per_token(params, dims) * kept


class SoftmaxAttention(ProjectedHeads):
    """Causal GQA softmax attention; ``forward(x [B, T, D], *, positions [B, T], cache, cu_seqlens) -> [B, T, D]``."""

    def __init__(self, params: AttentionParams, ctx: LayerContext, positional: nn.Module):
        super().__init__(params, ctx, positional)
        self.window = params.window
        self.g_proj = nn.Linear(ctx.d_model, self.n_heads * self.head_dim, bias=False) if params.output_gate else None

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.project(x, positions)
        key_valid = None
        if cache is not None:
            k, v = cache.append_kv(k, v, window=self.window)
            key_valid = cache.key_mask(k.shape[1], t)
        o = softmax_attention(q, k, v, window=self.window, cu_seqlens=cu_seqlens, key_valid=key_valid)
        o = o.reshape(b, t, self.n_heads * self.head_dim)
        if self.g_proj is not None:
            o = o * torch.sigmoid(self.g_proj(x))
        return self.o_proj(o)



ATTENTION_CACHE = CacheSpec(holds=("key", "value"), bytes_per_token=kv_bytes_per_token, bytes_at=windowed_kv_bytes)


@hookimpl
def mixarch_register_mixers(register):
    register("attention", SoftmaxAttention, AttentionParams, family="softmax", cache=ATTENTION_CACHE,
             attention_kv_bytes_per_token=kv_bytes_per_token,
             description="causal softmax attention (SDPA, GQA, optional QK-norm, output gate, window)")
