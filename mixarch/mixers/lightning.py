"""Built-in ``lightning``: the Lightning-attention linear layer of MiniCPM-SALA and HypeNet.

x -> q, k, v projections -> per-head QK RMSNorm -> positional (RoPE under HyPE) -> Lightning attention with
fp32 accumulation and state (per-head decay lambda_h = exp(-s_h), ALiBi slopes s_h) -> RMSNorm over all
heads jointly -> sigmoid output gate sigma(x W_z) -> output projection. KV heads are un-shared by default
(``n_kv_heads = n_heads``), as SALA and HypeNet expand the teacher's GQA K/V to MHA. Decode keeps a ``[B, H, D, D]`` fp32 state per layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from mixarch.hookspecs import hookimpl
from mixarch.mixers.heads import HeadParams, ProjectedHeads
from mixarch.model.cache import LayerCache
from mixarch.model.context import LayerContext
from mixarch.nn.norm import RMSNorm
from mixarch.ops.lightning import alibi_slopes, lightning_attention
from mixarch.registry import CacheSpec, Dims


class LightningParams(HeadParams):
    """Parameters of a Lightning layer (heads as :class:`HeadParams`; KV heads un-shared by default)."""

    qk_norm: bool = Field(True, description="per-head RMSNorm on queries and keys")
    output_norm: bool = Field(True, description="RMSNorm over all heads of the attention output")
    output_gate: bool = Field(True, description="sigmoid output gate o * sigmoid(x W_z)")
    decay: Literal["alibi", "alibi_layer_scaled"] = Field(
        "alibi", description="alibi: s_h = ALiBi slope (SALA, HypeNet); alibi_layer_scaled: MiniMax-01's "
                             "s_h * (1 - l / (L - 1) + 1e-5)")
    chunk_size: PositiveInt = Field(64, description="block size of the chunked form")
    kernel_dtype: Literal["activations", "float32"] = Field(
        "activations", description="dtype of q, k, v given to the attention op: the activations' (it accumulates "
                                   "in fp32 and keeps an fp32 state; 16-bit operands run on tensor cores) or "
                                   "float32 (exact operands; the Triton kernels then run without tensor cores)")


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


class LightningAttention(ProjectedHeads):
    """``forward(x [B, T, D], *, positions [B, T], cache, cu_seqlens) -> [B, T, D]``."""

    static_decode = True  # a decode step replaces cache.state with a tensor of the same shape (mixarch.generate.graphs)

    def __init__(self, params: LightningParams, ctx: LayerContext, positional: nn.Module):
        super().__init__(params, ctx, positional)
        inner = self.n_heads * self.head_dim
        self.chunk_size = params.chunk_size
        self.kernel_dtype = params.kernel_dtype
        self.o_norm = RMSNorm(inner, ctx.norm_eps) if params.output_norm else None
        self.z_proj = nn.Linear(ctx.d_model, inner, bias=False) if params.output_gate else None
        # plain floats, not a buffer: nothing to materialize after meta init, and model.to(bf16) cannot round them
        self.slopes = decay_slopes(params, ctx).tolist()
        self._decay: dict[torch.device, torch.Tensor] = {}  # fp32 [H] per device, built once

    def decay(self, device: torch.device) -> torch.Tensor:
        """The per-head slopes ``s_h`` as an fp32 ``[H]`` tensor on ``device``."""
        if device not in self._decay:  # a normal tensor even under inference_mode: its values are checked once
            with torch.inference_mode(False):
                self._decay[device] = torch.tensor(self.slopes, dtype=torch.float32, device=device)
        return self._decay[device]

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.project(x, positions)
        pad = cache.is_pad(t) if cache is not None else None
        if pad is not None:  # padding tokens add nothing to the state (which starts at zero before them)
            k = k.masked_fill(pad[..., None, None], 0.0)
            v = v.masked_fill(pad[..., None, None], 0.0)
        if self.n_kv_heads != self.n_heads:
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        if self.kernel_dtype == "float32":
            q, k, v = q.to(acc), k.to(acc), v.to(acc)
        state = cache.state if cache is not None else None
        o, state = lightning_attention(q, k, v, self.decay(x.device), initial_state=state,
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



@hookimpl
def mixarch_register_mixers(register):
    register("lightning", LightningAttention, LightningParams, family="linear",
             cache=CacheSpec(holds=("state",), fixed_bytes=state_bytes),
             attention_kv_bytes_per_token=attention_kv_bytes,
             description="Lightning attention (SALA/HypeNet linear layer: QK-norm, decay, output norm + gate)")
