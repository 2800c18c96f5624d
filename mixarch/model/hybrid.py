"""``HybridLM``: a decoder-only language model whose layers mix any registered sequence mixers.

embedding -> N pre-norm blocks (mixer + FFN, each on a residual branch) -> final norm -> LM head.
Optional MiniCPM muP scalars: embeddings x scale_emb, residual branches x scale_depth / sqrt(N),
logits of h / (d_model / dim_model_base).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mixarch.blueprint.resolve import dims_of
from mixarch.blueprint.schema import ResolvedBlueprint
from mixarch.model.cache import LayerCache, ModelCache
from mixarch.model.context import LayerContext
from mixarch.nn.norm import RMSNorm
from mixarch.plugins import PluginHost, get_host

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Block(nn.Module):
    """``x + s * mixer(norm(x))``, then ``x + s * ffn(norm(x))`` (no FFN sublayer when ``ffn`` is None)."""

    def __init__(self, ctx: LayerContext, mixer: nn.Module, ffn: nn.Module | None, residual_scale: float):
        super().__init__()
        self.ctx = ctx
        self.mixer_norm = RMSNorm(ctx.d_model, ctx.norm_eps)
        self.mixer = mixer
        self.ffn_norm = RMSNorm(ctx.d_model, ctx.norm_eps) if ffn is not None else None
        self.ffn = ffn
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        return self.ffn_sublayer(self.mixer_sublayer(x, positions=positions, cache=cache, cu_seqlens=cu_seqlens))

    def mixer_sublayer(self, x: torch.Tensor, *, positions: torch.Tensor, cache: LayerCache | None = None,
                       cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """``x + s * mixer(norm(x))``: x ``[B, T, D]``, positions ``[B, T]``."""
        return x + self.residual_scale * self.mixer(self.mixer_norm(x), positions=positions, cache=cache,
                                                    cu_seqlens=cu_seqlens)

    def ffn_sublayer(self, x: torch.Tensor) -> torch.Tensor:
        """``x + s * ffn(norm(x))`` (``x`` itself without an FFN): x ``[B, T, D]``."""
        return x if self.ffn is None else x + self.residual_scale * self.ffn(self.ffn_norm(x))


def build_layer(resolved: ResolvedBlueprint, index: int, host: PluginHost) -> Block:
    """Build block ``index`` of ``resolved``: its mixer (given its positional module) and FFN, by plugin."""
    layer, model = resolved.layers[index], resolved.model
    dims = dims_of(model)
    mixer_spec = host.mixers.get(layer.mixer.type)
    ctx = LayerContext(index=index, n_layers=model.n_layers, role=layer.role, family=mixer_spec.family,
                       dims=dims, norm_eps=model.norm_eps)
    context = {"dims": dims, "role": layer.role, "family": mixer_spec.family}
    pos_spec, ffn_spec = host.positionals.get(layer.positional.type), host.ffns.get(layer.ffn.type)
    positional = pos_spec.factory(pos_spec.params_model.model_validate(layer.positional.params, context=context), ctx)
    mixer = mixer_spec.factory(mixer_spec.params_model.model_validate(layer.mixer.params, context=context), ctx,
                               positional)
    ffn = ffn_spec.factory(ffn_spec.params_model.model_validate(layer.ffn.params, context=context), ctx)
    mup = model.mup
    residual_scale = mup.scale_depth / math.sqrt(model.n_layers) if mup and mup.scale_depth else 1.0
    return Block(ctx, mixer, ffn, residual_scale)


class HybridLM(nn.Module):
    """The hybrid language model of a resolved blueprint.

    ``forward(input_ids [B, T], *, cache=None, cu_seqlens=None, logits_to_keep=0) -> logits [B, T', V]``.
    Build on the meta device (``with torch.device("meta")``) to count parameters without allocating, then
    :meth:`materialize` or use :func:`mixarch.model.build_model`.
    """

    def __init__(self, resolved: ResolvedBlueprint, host: PluginHost | None = None):
        super().__init__()
        host = host or get_host()
        self.resolved = resolved
        m = resolved.model
        self.embed = nn.Embedding(m.vocab_size, m.d_model)
        self.blocks = nn.ModuleList(build_layer(resolved, i, host) for i in range(m.n_layers))
        self.norm = RMSNorm(m.d_model, m.norm_eps)
        self.lm_head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        if m.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.embed_scale = m.mup.scale_emb if m.mup else 1.0
        self.logit_divisor = m.d_model / m.mup.dim_model_base if m.mup and m.mup.dim_model_base else 1.0

    def new_cache(self, pad: torch.Tensor | None = None) -> ModelCache:
        """An empty decode cache for this model (any batch size).

        ``pad`` ``[B]``: left-padding tokens per row, for a batch of prompts of different lengths (the first
        ``pad[b]`` tokens of row ``b`` are ignored and its positions start after them).
        """
        return ModelCache(len(self.blocks), pad)

    def forward(self, input_ids: torch.Tensor, *, cache: ModelCache | None = None,
                cu_seqlens: torch.Tensor | None = None, logits_to_keep: int = 0) -> torch.Tensor:
        """Logits ``[B, T, V]`` (only the last ``logits_to_keep`` positions when > 0).

        With ``cache`` the tokens continue the cached sequence (chunked prefill or decode) and the cache is
        updated. ``cu_seqlens`` (``[N + 1]``, ``B == 1``) packs several sequences; positions restart at each.
        """
        b, t = input_ids.shape
        positions = self.positions(b, t, cache, cu_seqlens, input_ids.device)
        x = self.embed_tokens(input_ids)
        for i, block in enumerate(self.blocks):
            x = block(x, positions=positions, cache=cache[i] if cache is not None else None, cu_seqlens=cu_seqlens)
        if cache is not None:
            cache.advance(t)
        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]
        return self.logits(x)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scaled token embeddings ``[B, T, D]`` of ``input_ids`` ``[B, T]``."""
        x = self.embed(input_ids)
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, muP logit divisor and LM head: hidden ``[B, T, D]`` -> logits ``[B, T, V]``."""
        x = self.norm(x)
        if self.logit_divisor != 1.0:
            x = x / self.logit_divisor
        return self.lm_head(x)

    @staticmethod
    def positions(b: int, t: int, cache: ModelCache | None, cu_seqlens: torch.Tensor | None,
                  device) -> torch.Tensor:
        """Absolute positions ``[B, T]``: continuing the cache, or restarting at each packed sequence."""
        offset = cache.seen_tokens if cache is not None else 0
        pos = torch.arange(offset, offset + t, device=device)
        if cu_seqlens is not None:
            if b != 1:
                raise ValueError(f"cu_seqlens needs a batch of one packed row, got batch size {b}")
            starts = cu_seqlens.to(device=device, dtype=torch.long)
            seq_id = torch.bucketize(pos, starts[1:], right=True)
            pos = pos - starts[seq_id]
        if cache is not None and cache.pad is not None:  # left padding: each row's sequence starts at 0
            return (pos.unsqueeze(0) - cache.pad.to(device).unsqueeze(1)).clamp_min(0)
        return pos.unsqueeze(0).expand(b, t)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> HybridLM:
        """Deterministic init: N(0, init_std) for linear and embedding weights, zero biases, and each other
        module's own ``reset_parameters`` (norms, custom parameters and buffers of mixers)."""
        std = self.resolved.model.init_std
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    w = module.weight
                    w.copy_(torch.randn(w.shape, generator=gen, dtype=torch.float32).mul_(std).to(w))
                    if getattr(module, "bias", None) is not None:
                        module.bias.zero_()
                elif module is not self and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return self

    def allocate(self, device: str | torch.device = "cpu") -> HybridLM:
        """Give a meta-device model uninitialized storage on ``device`` (``to_empty``, keeping the head tied)."""
        self.to_empty(device=device)
        if self.resolved.model.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        return self

    def materialize(self, device: str | torch.device = "cpu", seed: int = 0) -> HybridLM:
        """Allocate a meta-device model on ``device`` and initialize it (:meth:`allocate` + :meth:`init_weights`)."""
        return self.allocate(device).init_weights(seed)

    def num_parameters(self) -> int:
        """Parameters, counting tied weights once."""
        return sum(p.numel() for p in self.parameters())


def build_model(resolved: ResolvedBlueprint, *, device: str | torch.device = "cpu", seed: int = 0,
                dtype: torch.dtype | None = None, host: PluginHost | None = None) -> HybridLM:
    """Instantiate ``resolved`` on ``device`` with seeded init, in ``dtype`` (default: the blueprint's)."""
    with torch.device("meta"):
        model = HybridLM(resolved, host)
    model.materialize(device, seed)
    return model.to(dtype or TORCH_DTYPES[resolved.model.dtype])
