"""The blueprint schema (pydantic v2, unknown keys forbidden).

A blueprint names roles (mixer + positional + FFN bundles), a layout selector that assigns a role to each
layer, and the model's sizes. Resolution turns it into a :class:`ResolvedBlueprint` whose ``layers`` list is
the explicit truth that is saved beside every artifact.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from mixarch.train.schema import TrainSection

DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(Strict):
    """A registered component by name, with its parameters (validated by the plugin's params model)."""

    type: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class RoleSpec(Strict):
    """What layers of one role are made of; ``positional``/``ffn`` default to the blueprint-level ones."""

    mixer: Component
    positional: Component | None = None
    ffn: Component | None = None


class MuP(Strict):
    """MiniCPM's muP-style scalars: embeddings x ``scale_emb``; each residual branch x ``scale_depth /
    sqrt(n_layers)``; logits of ``h / (d_model / dim_model_base)``."""

    scale_emb: PositiveFloat = 1.0
    scale_depth: PositiveFloat | None = None
    dim_model_base: PositiveInt | None = None


class ModelSection(Strict):
    d_model: PositiveInt
    n_layers: PositiveInt
    vocab_size: PositiveInt
    tie_embeddings: bool = True
    norm_eps: PositiveFloat = 1e-6
    init_std: PositiveFloat = 0.02
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of weights and activations (and of the KV cache in memory estimates)")
    max_seq_len: PositiveInt | None = None
    mup: MuP | None = None

    @property
    def dtype_bytes(self) -> int:
        return DTYPES[self.dtype]


class Layout(Strict):
    selector: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class Blueprint(Strict):
    """A hybrid model as written by a researcher."""

    blueprint_version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    model: ModelSection
    positional: Component = Field(default_factory=lambda: Component(type="nope"))
    ffn: Component = Field(default_factory=lambda: Component(type="swiglu"))
    roles: dict[str, RoleSpec] = Field(min_length=1)
    layout: Layout | None = Field(None, description="required when there is more than one role")
    train: TrainSection | None = Field(None, description="training settings read by `mixarch fit`")


class LayerEntry(Strict):
    """One row of the resolved table: everything needed to build layer ``index``."""

    index: int
    role: str
    mixer: Component
    family: str
    positional: Component
    ffn: Component
    info: dict[str, Any] = Field(default_factory=dict)


class ResolvedBlueprint(Strict):
    """A blueprint with its layout resolved into an explicit per-layer table (``resolved.yaml``)."""

    blueprint_version: Literal[1] = 1
    name: str
    description: str = ""
    model: ModelSection
    layers: list[LayerEntry]
    layout: Layout | None = Field(None, description="the layout the table was resolved from (for reference)")
    train: TrainSection | None = None
