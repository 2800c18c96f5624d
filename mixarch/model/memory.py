"""Parameter and decode-cache accounting of a resolved blueprint, from plugin metadata (no allocation)."""

from __future__ import annotations

from dataclasses import dataclass

from mixarch.blueprint.resolve import dims_of
from mixarch.blueprint.schema import ResolvedBlueprint
from mixarch.plugins import PluginHost, get_host


@dataclass(frozen=True)
class LayerCacheInfo:
    index: int
    role: str
    mixer: str
    family: str
    holds: tuple[str, ...]
    bytes_at: dict[int, int]  # sequence length -> bytes for one sequence
    bytes_per_token: int  # the part that grows with the sequence (e.g. K and V)
    fixed_bytes: int  # the part that does not (e.g. a recurrent state)


def mixer_params(layer, dims, host: PluginHost):
    """The mixer spec of a resolved layer and its validated params model."""
    spec = host.mixers.get(layer.mixer.type)
    context = {"dims": dims, "role": layer.role, "family": spec.family}
    return spec, spec.params_model.model_validate(layer.mixer.params, context=context)


def layer_cache_bytes(resolved: ResolvedBlueprint, seq_lens: list[int], host: PluginHost | None = None
                      ) -> list[LayerCacheInfo]:
    """Exact cache bytes of one sequence, per layer, at each of ``seq_lens``."""
    host = host or get_host()
    dims = dims_of(resolved.model)
    out = []
    for layer in resolved.layers:
        spec, params = mixer_params(layer, dims, host)
        out.append(LayerCacheInfo(layer.index, layer.role, spec.name, spec.family, spec.cache.holds,
                                  {n: spec.cache.total(params, dims, n) for n in seq_lens},
                                  int(spec.cache.bytes_per_token(params, dims)), int(spec.cache.fixed_bytes(params, dims))))
    return out


def full_attention_twin(resolved: ResolvedBlueprint, seq_lens: list[int], host: PluginHost | None = None
                        ) -> tuple[dict[int, int] | None, str]:
    """KV bytes of the same model with every layer full softmax attention, and how the twin was chosen.

    The twin gives every layer the KV geometry of the blueprint's first softmax or sparse layer; a blueprint
    without one uses each layer's own heads (``attention_kv_bytes_per_token`` of its mixer).
    """
    host = host or get_host()
    dims = dims_of(resolved.model)

    def per_token(layer) -> int | None:
        spec, params = mixer_params(layer, dims, host)
        if spec.attention_kv_bytes_per_token is None:
            return None
        return int(spec.attention_kv_bytes_per_token(params, dims))

    anchor = next((la for la in resolved.layers if la.family in ("softmax", "sparse")
                   and per_token(la) is not None), None)
    if anchor is not None:
        bpt = per_token(anchor) * len(resolved.layers)
        how = f"every layer with the K/V heads of layer {anchor.index} ({anchor.role})"
    else:
        tokens = [per_token(la) for la in resolved.layers]
        if any(t is None for t in tokens):
            return None, "no full-attention equivalent is known for some mixers"
        bpt = sum(tokens)
        how = "every layer as softmax attention with its own heads"
    return {n: bpt * n for n in seq_lens}, how
