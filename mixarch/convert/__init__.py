"""Converting Transformers into hybrids (HALO): layer-swap scoring and attention -> linear initialization."""

from mixarch.convert.halo import attention_to_lightning, layer_swap_scores

__all__ = ["attention_to_lightning", "layer_swap_scores"]
