"""The ``train:`` section of a blueprint (pydantic, unknown keys forbidden; no Lightning import).

``mixarch fit -c BLUEPRINT.yaml`` turns it into the LightningCLI configuration: ``trainer`` -> Trainer
arguments, ``optimizer``/``schedule``/``param_groups``/``activation_checkpointing``/``init_from`` ->
:class:`~mixarch.train.module.HybridLMModule` arguments, ``data`` -> a DataModule chosen by name,
``checkpoint`` -> the exporting ModelCheckpoint. The same models type the module's arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(Strict):
    """AdamW. Weight decay applies to matrices (ndim >= 2) only; vectors (norms, biases) get none."""

    lr: PositiveFloat = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.1


class ScheduleConfig(Strict):
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio`` at
    ``total_steps`` (default: ``trainer.max_steps``, else the Trainer's estimate); ``constant`` after warmup."""

    kind: Literal["cosine", "constant"] = "cosine"
    warmup_steps: NonNegativeInt = 100
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    total_steps: PositiveInt | None = None


class ParamGroup(Strict):
    """Parameters selected by layer ``family`` / ``role`` / ``layers`` (block indices) and a ``name`` glob
    (e.g. ``"*.mixer.*"``, ``"embed.*"``); a group with no selector matches every parameter. Each parameter
    joins the first group that matches it (unmatched ones train with the defaults). ``freeze: true`` sets
    ``requires_grad=False``; ``lr_scale`` multiplies the learning rate; ``weight_decay`` overrides it."""

    family: str | list[str] | None = None
    role: str | list[str] | None = None
    layers: list[NonNegativeInt] | None = None
    name: str | None = None
    freeze: bool = False
    lr_scale: PositiveFloat = 1.0
    weight_decay: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _lists(self):
        for key in ("family", "role"):
            if isinstance(getattr(self, key), str):
                setattr(self, key, [getattr(self, key)])
        return self


class DataSpec(Strict):
    """A DataModule by registered name (``mqar``, ``passkey``, ``niah``, ``text``) and its arguments."""

    type: str = Field("mqar", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class TrainSection(Strict):
    """Everything ``mixarch fit`` needs beyond the model; every key has a default."""

    seed: int = 0
    trainer: dict[str, Any] = Field(default_factory=dict, description="lightning.pytorch.Trainer arguments")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    param_groups: list[ParamGroup] = Field(default_factory=list)
    activation_checkpointing: bool = False
    init_from: str | None = Field(None, description="a model directory (resolved.yaml + model.safetensors) "
                                                    "whose weights initialize the model")
    data: DataSpec = Field(default_factory=DataSpec)
    checkpoint: dict[str, Any] = Field(default_factory=dict, description="ModelCheckpoint arguments")
