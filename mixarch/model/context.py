"""What a component factory learns about the layer it builds."""

from __future__ import annotations

from dataclasses import dataclass

from mixarch.registry import Dims


@dataclass(frozen=True)
class LayerContext:
    """Position and surroundings of one layer, given to mixer, positional and FFN factories.

    ``family`` is the family of the layer's mixer (``softmax``, ``sparse``, ``linear``, ...), so that a
    positional policy such as HyPE can choose per family.
    """

    index: int
    n_layers: int
    role: str
    family: str
    dims: Dims
    norm_eps: float = 1e-6

    @property
    def d_model(self) -> int:
        return self.dims.d_model
