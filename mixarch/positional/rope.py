"""Built-in positional encodings: RoPE and NoPE."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from mixarch.hookspecs import hookimpl
from mixarch.nn.rotary import rotary_angles, rotate
from mixarch.positional.base import NoPE, PositionalEncoding


class RoPEParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    theta: float = Field(10000.0, gt=0, description="base of the rotation frequencies")
    rotary_dim: PositiveInt | None = Field(None, description="channels rotated per head (default: all); even")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoPE(PositionalEncoding):
    """Rotary embedding (rotate-half) of queries and keys at their absolute positions."""

    def __init__(self, theta: float = 10000.0, rotary_dim: int | None = None):
        super().__init__()
        if rotary_dim is not None and rotary_dim % 2:
            raise ValueError(f"rotary_dim must be even, got {rotary_dim}")
        self.theta = theta
        self.rotary_dim = rotary_dim
        self.label = f"rope(θ={theta:.0f})" if float(theta).is_integer() else f"rope(θ={theta:g})"

    def forward(self, q, k, positions):
        cos, sin = rotary_angles(positions, self.rotary_dim or q.shape[-1], self.theta)  # once for q and k
        return rotate(q, cos, sin), rotate(k, cos, sin)


def make_rope(params: RoPEParams, ctx) -> RoPE:
    return RoPE(params.theta, params.rotary_dim)


def make_nope(params: NoParams, ctx) -> NoPE:
    return NoPE()


@hookimpl
def mixarch_register_positionals(register):
    register("rope", make_rope, RoPEParams, description="rotary position embedding (rotate-half)")
    register("nope", make_nope, NoParams, description="no positional encoding")
