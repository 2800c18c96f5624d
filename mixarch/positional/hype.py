"""HyPE (HypeNet / MiniCPM-SALA): a positional *policy* chosen per mixer family.

RoPE in the layers whose family is listed in ``rope_families`` (the linear layers), NoPE elsewhere (softmax and
sparse layers, whose NoPE KV cache extrapolates), optionally with HypeNet's inference-time attention logit
scaling ``s_t = log(t + alpha) / log(alpha)`` (t the 0-based absolute position) on the NoPE attention layers.
SALA ships with the scaling off (``alpha: null``); HypeNet-2B uses alpha = 500.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from mixarch.hookspecs import hookimpl
from mixarch.positional.base import NoPE, PositionalEncoding
from mixarch.positional.rope import RoPE


class HyPEParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base in the RoPE families")
    rotary_dim: PositiveInt | None = None
    rope_families: list[str] = Field(default_factory=lambda: ["linear"],
                                     description="mixer families that get RoPE; all others get NoPE")
    logit_scaling_alpha: float | None = Field(
        None, gt=1, description="HypeNet's query scaling log(t+alpha)/log(alpha) on NoPE attention layers; "
                                "null: off (as SALA ships)")
    logit_scaling_at: Literal["inference", "always"] = Field(
        "inference", description="inference: only in eval mode (HypeNet trains without it); always: also in "
                                 "training")


class LogScaledNoPE(PositionalEncoding):
    """NoPE with queries scaled by ``log(t + alpha) / log(alpha)`` at absolute position ``t``
    (in eval mode only, unless ``always``)."""

    def __init__(self, alpha: float, always: bool = False):
        super().__init__()
        self.alpha, self.always = alpha, always
        self.label = f"nope+log-scale(α={alpha:g}{'' if always else ', inference'})"

    def forward(self, q, k, positions):
        if self.training and not self.always:
            return q, k
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        scale = torch.log(positions.to(acc) + self.alpha) / math.log(self.alpha)  # [B, T]
        return (q.to(acc) * scale[..., None, None]).to(q.dtype), k


def make_hype(params: HyPEParams, ctx) -> PositionalEncoding:
    if ctx.family in params.rope_families:
        rope = RoPE(params.rope_theta, params.rotary_dim)
        rope.label = f"hype:{rope.label}"
        return rope
    if params.logit_scaling_alpha is not None and ctx.family in ("softmax", "sparse"):
        return LogScaledNoPE(params.logit_scaling_alpha, always=params.logit_scaling_at == "always")
    nope = NoPE()
    nope.label = "hype:nope"
    return nope


@hookimpl
def mixarch_register_positionals(register):
    register("hype", make_hype, HyPEParams,
             description="HyPE: RoPE for linear layers, NoPE (+ optional log logit scaling) for attention")
