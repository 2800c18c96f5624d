"""The hybrid model: blocks built by plugins, the shared decode cache, save/load."""

from mixarch.model.cache import LayerCache, ModelCache
from mixarch.model.context import LayerContext
from mixarch.model.hybrid import Block, HybridLM, build_model

__all__ = ["Block", "HybridLM", "LayerCache", "LayerContext", "ModelCache", "build_model"]
