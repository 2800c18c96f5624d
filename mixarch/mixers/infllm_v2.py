"""Built-in ``infllm_v2``: the InfLLM-V2 sparse attention layer of MiniCPM4 / MiniCPM-SALA.

GQA projections (no QK-norm in the released SALA code, an option here), positional (NoPE under HyPE),
:func:`mixarch.ops.infllm_v2_attention` (dense causal attention below ``dense_len`` keys, block-sparse above),
sigmoid output gate, output projection. Decode keeps the full KV cache plus the compressed keys of stage 1
(C1, and C2 for the approximate normalizer), extended incrementally from the tail of the KV cache: the
released code's separate pending-key buffers are unnecessary since those keys are in the KV cache already.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from mixarch.hookspecs import hookimpl
from mixarch.mixers.attention import AttentionParams, kv_bytes_per_token
from mixarch.mixers.heads import ProjectedHeads
from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.ops.infllm_v2 import infllm_v2_attention
from mixarch.ops.infllm_v2.compress import C2_FACTOR, compress_keys, num_compressed
from mixarch.registry import CacheSpec, Dims


class InfLLMV2Params(AttentionParams):
    """Attention parameters plus the InfLLM-V2 knobs (defaults: MiniCPM-SALA's ``sparse_config``)."""

    output_gate: bool = Field(True, description="sigmoid output gate o * sigmoid(x W_g)")
    block_size: PositiveInt = 64
    kernel_size: PositiveInt = Field(32, description="C1 window of the compressed keys")
    kernel_stride: PositiveInt = Field(16, description="C1 stride of the compressed keys")
    init_blocks: int = Field(1, ge=0)
    local_blocks: int = Field(32, ge=0, description="local window in blocks (2048 / 64); local_blocks + 1 forced")
    topk: PositiveInt = Field(96, description="selected blocks per query, forced ones included")
    dense_len: int = Field(8192, ge=0, description="below this many keys: dense causal attention")
    exact_normalizer: bool = Field(False, description="False: the released LSE approximation over C2 keys")

    @model_validator(mode="after")
    def _strides(self):
        if self.window is not None:
            raise ValueError("window: not supported by infllm_v2 (its local window is local_blocks)")
        if self.block_size % self.kernel_stride or self.kernel_size % self.kernel_stride:
            raise ValueError(f"block_size ({self.block_size}) and kernel_size ({self.kernel_size}) must be "
                             f"multiples of kernel_stride ({self.kernel_stride})")
        return self

    def kernels(self) -> list[tuple[str, int, int]]:
        """(cache slot, window, stride) of each compressed-key cache this layer keeps."""
        out = [("compressed_k", self.kernel_size, self.kernel_stride)]
        if not self.exact_normalizer:
            out.append(("compressed_k2", C2_FACTOR * self.kernel_size, C2_FACTOR * self.kernel_stride))
        return out


def cache_bytes(params: InfLLMV2Params, dims: Dims, seq_len: int) -> int:
    """K and V of every token plus one key vector per compressed window (exact)."""
    key_bytes = params.n_kv_heads * params.head_dim * dims.dtype_bytes
    windows = sum(num_compressed(seq_len, size, stride) for _, size, stride in params.kernels())
    return kv_bytes_per_token(params, dims) * seq_len + key_bytes * windows


def extend_compressed(cache: LayerCache, slot: str, keys: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Append to ``cache.extras[slot]`` the windows completed by the keys ``[B, T, H, D]`` (all cached keys)."""
    old = cache.extras.get(slot)
    n_old = 0 if old is None else old.shape[1]
    n_new = num_compressed(keys.shape[1], size, stride)
    if old is None:
        old = keys.new_zeros((keys.shape[0], 0, *keys.shape[2:]))
    if n_new > n_old:
        tail = keys[:, n_old * stride:(n_new - 1) * stride + size]
        old = torch.cat((old, compress_keys(tail, size, stride)), dim=1)
    cache.extras[slot] = old
    return old


class InfLLMV2Attention(ProjectedHeads):
    """``forward(x [B, T, D], *, positions [B, T], cache, cu_seqlens) -> [B, T, D]``."""

    def __init__(self, params: InfLLMV2Params, ctx: LayerContext, positional: nn.Module):
        super().__init__(params, ctx, positional)
        self.params = params
        self.g_proj = nn.Linear(ctx.d_model, self.n_heads * self.head_dim, bias=False) if params.output_gate else None

    def attend(self, q, k, v, **compressed) -> torch.Tensor:
        p = self.params
        return infllm_v2_attention(q, k, v, block_size=p.block_size, kernel_size=p.kernel_size,
                                   kernel_stride=p.kernel_stride, init_blocks=p.init_blocks,
                                   local_blocks=p.local_blocks, topk=p.topk, dense_len=p.dense_len,
                                   exact_normalizer=p.exact_normalizer, **compressed)

    def attend_padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Rows of a left-padded batch one at a time, each over its own keys: block boundaries are relative to
        the row's first real token. Compressed keys are recomputed per call (no incremental cache here);
        outputs at padding positions are zero."""
        t, first = q.shape[1], cache.seen_tokens
        out = torch.zeros_like(q)
        for b, pad in enumerate(cache.pad.tolist()):
            start = max(0, pad - first)  # first real query of this call
            if start < t:
                out[b:b + 1, start:] = self.attend(q[b:b + 1, start:], k[b:b + 1, pad:], v[b:b + 1, pad:])
        return out

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.project(x, positions)
        if cache is not None and cache.pad is not None and bool((cache.pad > 0).any()):
            o = self.attend_padded(q, *cache.append_kv(k, v), cache)
        elif cache is not None:
            k, v = cache.append_kv(k, v)
            compressed = {slot: extend_compressed(cache, slot, k, size, stride)
                          for slot, size, stride in self.params.kernels()}
            o = self.attend(q, k, v, **compressed)
        elif cu_seqlens is not None:  # packed sequences: each attends only to itself
            bounds = cu_seqlens.tolist()
            o = torch.cat([self.attend(q[:, s:e], k[:, s:e], v[:, s:e]) for s, e in zip(bounds[:-1], bounds[1:])],
                          dim=1)
        else:
            o = self.attend(q, k, v)
        o = o.reshape(b, t, self.n_heads * self.head_dim)
        if self.g_proj is not None:
            o = o * torch.sigmoid(self.g_proj(x))
        return self.o_proj(o)



@hookimpl
def mixarch_register_mixers(register):
    register("infllm_v2", InfLLMV2Attention, InfLLMV2Params, family="sparse",
             cache=CacheSpec(holds=("key", "value", "compressed_k", "compressed_k2"),
                             bytes_per_token=kv_bytes_per_token, bytes_at=cache_bytes),
             attention_kv_bytes_per_token=kv_bytes_per_token,
             description="InfLLM-V2 block-sparse attention (dense below dense_len), GQA, output gate")
