"""What a layout selector returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Selection:
    """The role of each layer, plus optional per-layer notes (e.g. a selection score) for the resolved table."""

    roles: list[str]
    info: list[dict[str, Any]] = field(default_factory=list)


def normalize_index(index: int, n_layers: int, where: str) -> int:
    """``index`` in ``[0, n_layers)``; negative counts from the end; ValueError naming ``where`` otherwise."""
    if not -n_layers <= index < n_layers:
        raise ValueError(f"{where}: layer index {index} is out of range for {n_layers} layers")
    return index % n_layers
