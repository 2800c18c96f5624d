"""Built-in layout selectors: ``explicit``, ``pattern``, ``ratio``, ``indices``.

Each returns one role per layer; errors are ValueErrors whose text names the offending parameter (the
resolver adds the blueprint key path).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from mixarch.hookspecs import hookimpl
from mixarch.selectors.base import Selection, normalize_index


class ExplicitParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: list[str] = Field(min_length=1, description="the role of each layer, in order")


def select_explicit(params: ExplicitParams, n_layers: int, roles: list[str]) -> Selection:
    if len(params.layers) != n_layers:
        raise ValueError(f"layers: lists {len(params.layers)} layers but model.n_layers is {n_layers}")
    return Selection(list(params.layers))


class PatternParams(BaseModel):
    """``pattern``: symbols with repetition, e.g. ``"(LLLS)*8"`` or ``"S (L)*3 S"``; ``symbols``: symbol -> role."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pattern: str = Field(min_length=1)
    symbols: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _single_chars(self):
        for sym in self.symbols:
            if len(sym) != 1 or sym in "()* " or sym.isdigit():
                raise ValueError(f"symbols: {sym!r} must be one character other than a digit, space, '(', ')' or '*'")
        return self


_TOKEN = re.compile(r"\s*(?:(\()|(\))|\*\s*(\d+)|(\S))")


def expand_pattern(pattern: str, symbols: dict[str, str]) -> list[str]:
    """Expand ``"(LLLS)*2"`` into roles; ``X*n`` repeats the preceding symbol or group ``n`` times."""
    stack: list[list[str]] = [[]]
    last: list[str] | None = None  # the most recent complete item, for '*n'
    pos = 0
    while pos < len(pattern):
        m = _TOKEN.match(pattern, pos)
        if m is None:  # only trailing whitespace is left
            break
        pos = m.end()
        open_, close, count, sym = m.groups()
        if open_:
            stack.append([])
            last = None
        elif close:
            if len(stack) == 1:
                raise ValueError(f"pattern: unmatched ')' at position {m.start(2)}")
            group = stack.pop()
            stack[-1].extend(group)
            last = group
        elif count is not None:
            if last is None:
                raise ValueError(f"pattern: '*{count}' at position {m.start()} repeats nothing")
            n = int(count)
            if n < 1:
                raise ValueError(f"pattern: repeat count must be >= 1, got {n}")
            stack[-1].extend(last * (n - 1))
            last = None
        else:
            if sym not in symbols:
                raise ValueError(f"pattern: symbol {sym!r} at position {m.start(4)} is not in symbols "
                                 f"({', '.join(sorted(symbols))})")
            stack[-1].append(symbols[sym])
            last = [symbols[sym]]
    if len(stack) != 1:
        raise ValueError("pattern: unmatched '('")
    return stack[0]


def select_pattern(params: PatternParams, n_layers: int, roles: list[str]) -> Selection:
    layers = expand_pattern(params.pattern, params.symbols)
    if len(layers) != n_layers:
        raise ValueError(f"pattern: {params.pattern!r} expands to {len(layers)} layers but model.n_layers is "
                         f"{n_layers}")
    return Selection(layers)


class RatioParams(BaseModel):
    """``role`` on an evenly spaced ``fraction`` (or ``count``) of the layers, ``other`` elsewhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: str
    other: str
    fraction: float | None = Field(None, gt=0, le=1)
    count: PositiveInt | None = None
    force_first: bool = False
    force_last: bool = False

    @model_validator(mode="after")
    def _one_amount(self):
        if (self.fraction is None) == (self.count is None):
            raise ValueError("give exactly one of fraction and count")
        return self


def evenly_spaced(candidates: list[int], m: int) -> list[int]:
    """``m`` of ``candidates`` at evenly spaced positions (centres of ``m`` equal bins)."""
    n = len(candidates)
    return [candidates[int((i + 0.5) * n / m)] for i in range(m)]


def select_ratio(params: RatioParams, n_layers: int, roles: list[str]) -> Selection:
    count = params.count if params.count is not None else round(params.fraction * n_layers)
    if count > n_layers:
        raise ValueError(f"count: {count} layers asked for but model.n_layers is {n_layers}")
    forced = sorted({i for i, on in ((0, params.force_first), (n_layers - 1, params.force_last)) if on})
    if count < len(forced):
        raise ValueError(f"{'count' if params.count else 'fraction'}: selects {count} layers, fewer than the "
                         f"{len(forced)} forced (force_first/force_last)")
    rest = [i for i in range(n_layers) if i not in forced]
    chosen = set(forced) | set(evenly_spaced(rest, count - len(forced)) if count > len(forced) else [])
    return Selection([params.role if i in chosen else params.other for i in range(n_layers)])


class IndicesParams(BaseModel):
    """``roles``: role -> list of layer indices (negative from the end); ``default``: the role elsewhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    roles: dict[str, list[int]] = Field(min_length=1)
    default: str | None = None


def select_indices(params: IndicesParams, n_layers: int, roles: list[str]) -> Selection:
    assigned: dict[int, str] = {}
    for role, indices in params.roles.items():
        for index in indices:
            i = normalize_index(index, n_layers, f"roles.{role}")
            if i in assigned:
                raise ValueError(f"roles.{role}: layer {i} is already assigned to role {assigned[i]!r}")
            assigned[i] = role
    missing = [i for i in range(n_layers) if i not in assigned]
    if missing and params.default is None:
        raise ValueError(f"default: layers {missing} have no role; give `default` or list them")
    return Selection([assigned.get(i, params.default) for i in range(n_layers)])


@hookimpl
def mixarch_register_selectors(register):
    register("explicit", select_explicit, ExplicitParams, description="one role per layer")
    register("pattern", select_pattern, PatternParams, description="symbols with repetition, e.g. (LLLS)*8")
    register("ratio", select_ratio, RatioParams, description="a role on an evenly spaced fraction of layers")
    register("indices", select_indices, IndicesParams, description="role -> list of layer indices")
