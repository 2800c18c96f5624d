"""What plugins register: typed specs, and registries that refuse silent name clashes.

Each hook of :mod:`mixarch.hookspecs` receives a ``register`` callback; the host turns its keyword arguments
into one of the specs below, stamps it with the registering plugin and stores it in a :class:`Registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from mixarch.errors import DuplicateRegistrationError, MixarchError, PluginError, unknown_name_message

FAMILIES = ("softmax", "sparse", "linear", "ssm", "conv", "none")


@dataclass(frozen=True)
class Dims:
    """Model-level sizes that cache and parameter formulas may need.

    ``dtype_bytes`` is the size of one element of the model's activations / KV cache.
    """

    d_model: int
    n_layers: int
    vocab_size: int
    dtype_bytes: int = 2


@dataclass(frozen=True)
class CacheSpec:
    """What a mixer's decode cache holds and how large it is for one sequence.

    ``bytes_per_token(params, dims)`` is what grows with the sequence (K and V of a softmax layer),
    ``fixed_bytes(params, dims)`` what does not (a recurrent state). ``bytes_at(params, dims, seq_len)``,
    when given, is the exact total where the cache is not linear in the length (a window, compressed keys);
    otherwise the total is ``bytes_per_token * seq_len + fixed_bytes``.
    """

    holds: tuple[str, ...] = ()
    bytes_per_token: Callable[[Any, Dims], int] = lambda params, dims: 0
    fixed_bytes: Callable[[Any, Dims], int] = lambda params, dims: 0
    bytes_at: Callable[[Any, Dims, int], int] | None = None

    def total(self, params: Any, dims: Dims, seq_len: int) -> int:
        """Exact cache bytes of one sequence after ``seq_len`` tokens."""
        if self.bytes_at is not None:
            return int(self.bytes_at(params, dims, seq_len))
        return int(self.bytes_per_token(params, dims)) * seq_len + int(self.fixed_bytes(params, dims))


@dataclass(frozen=True)
class Spec:
    """Common fields of every registration."""

    name: str
    factory: Callable[..., Any]
    params_model: type[BaseModel]
    description: str = ""
    plugin: str = ""  # stamped by the host: the plugin that registered it

    @property
    def kind(self) -> str:
        return "component"


@dataclass(frozen=True)
class MixerSpec(Spec):
    """A sequence mixer. ``factory(params, ctx: LayerContext, positional) -> nn.Module``.

    The module's ``forward(x [B, T, D], *, positions [B, T], cache: LayerCache | None, cu_seqlens) -> [B, T, D]``.
    ``attention_kv_bytes_per_token(params, dims)``: the KV bytes per token this layer would need as full
    softmax attention with its own heads (for the "all full attention" comparison); None if not meaningful.
    """

    family: str = "softmax"
    cache: CacheSpec = field(default_factory=CacheSpec)
    attention_kv_bytes_per_token: Callable[[Any, Dims], int] | None = None

    @property
    def kind(self) -> str:
        return "mixer"


@dataclass(frozen=True)
class PositionalSpec(Spec):
    """A positional encoding. ``factory(params, ctx: LayerContext) -> PositionalEncoding``."""

    @property
    def kind(self) -> str:
        return "positional"


@dataclass(frozen=True)
class FFNSpec(Spec):
    """A channel mixer. ``factory(params, ctx: LayerContext) -> nn.Module | None`` (None: no FFN sublayer)."""

    @property
    def kind(self) -> str:
        return "ffn"


@dataclass(frozen=True)
class SelectorSpec(Spec):
    """A layout selector. ``factory(params, n_layers, roles) -> Selection`` (one role per layer)."""

    @property
    def kind(self) -> str:
        return "selector"


S = TypeVar("S", bound=Spec)


class Registry(Generic[S]):
    """Name -> spec for one kind of component; a second registration of a name is an error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._specs: dict[str, S] = {}
        self.overridden: list[tuple[S, S]] = []  # (replaced, replacement)

    def add(self, spec: S, *, override: bool = False) -> None:
        if not isinstance(spec.name, str) or not spec.name:
            raise PluginError(f"plugin {spec.plugin!r} registered a {self.kind} with an empty or non-string name")
        previous = self._specs.get(spec.name)
        if previous is not None and not override:
            raise DuplicateRegistrationError(
                f"{self.kind} {spec.name!r} is registered by both plugin {previous.plugin!r} and plugin "
                f"{spec.plugin!r}; uninstall one, limit plugins with MIXARCH_LOAD_PLUGINS, or register with "
                f"override=True to replace it deliberately")
        if previous is not None:
            self.overridden.append((previous, spec))
        self._specs[spec.name] = spec

    def get(self, name: str, *, where: str | None = None) -> S:
        """The spec called ``name``; a :class:`MixarchError` listing the closest names otherwise."""
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise MixarchError(unknown_name_message(self.kind, str(name), self._specs), key=where) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)
