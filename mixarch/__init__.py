"""mixarch: compose hybrid sparse / linear / full-attention language models from plug-ins.

Top-level API: :func:`load` (a directory written by ``mixarch build --out`` or a training export),
:func:`build` (a blueprint file -> model), :func:`resolve` (a blueprint file -> explicit layer table).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build", "load", "resolve"]


def resolve(path, overrides=()):
    """Load, validate and resolve the blueprint file at ``path`` (``overrides``: ``["a.b=c", ...]``)."""
    from mixarch.blueprint.resolve import resolve_file

    return resolve_file(path, overrides)


def build(path, overrides=(), *, device="cpu", seed=0, dtype=None):
    """Build the model of the blueprint file at ``path`` with seeded init."""
    from mixarch.model.hybrid import build_model

    return build_model(resolve(path, overrides), device=device, seed=seed, dtype=dtype)


def load(directory, *, device="cpu", dtype=None):
    """Load a model saved with ``resolved.yaml`` and ``model.safetensors`` in ``directory``."""
    from mixarch.model.io import load as _load

    return _load(directory, device=device, dtype=dtype)
