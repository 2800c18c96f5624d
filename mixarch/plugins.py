"""The plugin host: loads built-in and installed plugins and fills the registries.

Built-ins (:data:`DEFAULT_PLUGINS`) are registered through the same hooks as third-party plugins, which are
found through the ``mixarch`` entry-point group. ``MIXARCH_LOAD_PLUGINS`` (comma-separated entry-point
names; empty for none) limits which installed plugins load.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from mixarch import hookspecs
from mixarch.errors import PluginError
from mixarch.kernels.registry import KernelRegistry, KernelSpec
from mixarch.registry import FAMILIES, FFNSpec, MixerSpec, PositionalSpec, Registry, SelectorSpec, Spec

ENTRY_POINT_GROUP = "mixarch"
LOAD_ENV = "MIXARCH_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "mixarch.mixers.attention",
    "mixarch.mixers.sliding_window",
    "mixarch.mixers.lightning",
    "mixarch.mixers.infllm_v2",
    "mixarch.mixers.short_conv",
    "mixarch.positional.rope",
    "mixarch.positional.hype",
    "mixarch.ffn.builtin",
    "mixarch.selectors.builtin",
    "mixarch.selectors.halo",
    "mixarch.kernels.reference",
    "mixarch.kernels.triton.lightning.plugin",
    "mixarch.kernels.triton.infllm_v2.plugin",
)

# hook name -> (registry attribute, spec class)
HOOKS: dict[str, tuple[str, type[Spec]]] = {
    "mixarch_register_mixers": ("mixers", MixerSpec),
    "mixarch_register_positionals": ("positionals", PositionalSpec),
    "mixarch_register_ffns": ("ffns", FFNSpec),
    "mixarch_register_selectors": ("selectors", SelectorSpec),
}


KERNEL_HOOK = "mixarch_register_kernels"


@dataclass
class PluginInfo:
    """One loaded plugin: where it comes from and what it registered (kind -> names)."""

    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)


class PluginHost:
    """A pluggy manager plus one :class:`Registry` per component kind."""

    def __init__(self, *, load_entry_points: bool = True, extra: list[tuple[object, str]] = ()):
        self.pm = pluggy.PluginManager("mixarch")
        self.pm.add_hookspecs(hookspecs)
        self.mixers: Registry[MixerSpec] = Registry("mixer")
        self.positionals: Registry[PositionalSpec] = Registry("positional")
        self.ffns: Registry[FFNSpec] = Registry("ffn")
        self.selectors: Registry[SelectorSpec] = Registry("selector")
        self.kernels = KernelRegistry()
        self.info: dict[str, PluginInfo] = {}
        version = _version("mixarch")
        for module_name in DEFAULT_PLUGINS:
            self._add(importlib.import_module(module_name), module_name, "mixarch", version, builtin=True)
        if load_entry_points:
            self._load_entry_points()
        for obj, name in extra:
            self._add(obj, name, name, "", builtin=False)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as err:
            name = self.pm.get_name(err.plugin) if getattr(err, "plugin", None) is not None else "?"
            raise PluginError(f"plugin {name!r}: {err}") from None
        self._run_hooks()

    def _add(self, obj: object, name: str, dist: str, version: str, *, builtin: bool) -> None:
        if name in self.info:
            raise PluginError(f"two plugins are named {name!r} ({self.info[name].distribution} and {dist})")
        try:
            self.pm.register(obj, name=name)
        except (ValueError, pluggy.PluginValidationError) as err:
            raise PluginError(f"plugin {name!r} ({dist}) could not be registered: {err}") from None
        self.info[name] = PluginInfo(name, dist, version, builtin)

    def _load_entry_points(self) -> None:
        allowed = os.environ.get(LOAD_ENV)
        allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if allow is not None and ep.name not in allow:
                continue
            try:
                obj = ep.load()
            except Exception as err:  # noqa: BLE001 - any import failure of a third-party plugin
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to import: {err}") from None
            dist = ep.dist.name if ep.dist is not None else ep.name
            self._add(obj, ep.name, dist, _version(dist), builtin=False)

    def _run_hooks(self) -> None:
        for hook_name in (*HOOKS, KERNEL_HOOK):
            # registration order: built-ins first, so a later plugin's override=True replaces a built-in
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self.info[impl.plugin_name]
                info.hooks.append(hook_name)
                if hook_name == KERNEL_HOOK:
                    register = self._kernel_callback(impl.plugin_name, info)
                else:
                    attr, spec_cls = HOOKS[hook_name]
                    register = self._register_callback(impl.plugin_name, getattr(self, attr), spec_cls, info)
                impl.function(**{arg: register for arg in impl.argnames if arg == "register"})

    def _kernel_callback(self, plugin: str, info: PluginInfo) -> Callable:
        def register(op: str, backend: str, impl: Callable, *, priority: int = 0, supports: Callable | None = None,
                     is_available: Callable | None = None, default_devices: tuple[str, ...] | None = None,
                     description: str = "", override: bool = False) -> None:
            if not (isinstance(op, str) and op and isinstance(backend, str) and backend and callable(impl)):
                raise PluginError(f"plugin {plugin!r}: a kernel needs an op name, a backend name and a callable")
            extra = {k: v for k, v in (("supports", supports), ("is_available", is_available)) if v is not None}
            self.kernels.add(KernelSpec(op=op, backend=backend, impl=impl, priority=priority,
                                        description=description, plugin=plugin, default_devices=default_devices,
                                        **extra), override=override)
            info.registered.setdefault("kernel", []).append(f"{op}:{backend}")

        return register

    @staticmethod
    def _register_callback(plugin: str, registry: Registry, spec_cls: type[Spec], info: PluginInfo) -> Callable:
        def register(name: str, factory: Callable, params: type, *, override: bool = False, **meta: Any) -> None:
            if not (isinstance(params, type) and hasattr(params, "model_validate")):
                raise PluginError(f"plugin {plugin!r}: {registry.kind} {name!r} needs a pydantic model as params")
            if not callable(factory):
                raise PluginError(f"plugin {plugin!r}: {registry.kind} {name!r} factory is not callable")
            try:
                spec = spec_cls(name=name, factory=factory, params_model=params, plugin=plugin, **meta)
            except TypeError as err:
                raise PluginError(f"plugin {plugin!r}: bad registration of {registry.kind} {name!r}: {err}") from None
            if isinstance(spec, MixerSpec) and spec.family not in FAMILIES:
                raise PluginError(f"plugin {plugin!r}: mixer {name!r} has family {spec.family!r}; "
                                  f"expected one of {', '.join(FAMILIES)}")
            registry.add(spec, override=override)
            info.registered.setdefault(registry.kind, []).append(name)

        return register


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, created on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def reset_host() -> None:
    """Forget the loaded plugins (the next :func:`get_host` reloads them, e.g. after changing the environment)."""
    global _HOST
    _HOST = None


@contextlib.contextmanager
def plugins_added(*plugins: tuple[object, str]) -> Iterator[PluginHost]:
    """Temporarily add plugin objects ``(obj, name)`` to the host (tests, notebooks)."""
    global _HOST
    saved = _HOST
    _HOST = PluginHost(extra=list(plugins))
    try:
        yield _HOST
    finally:
        _HOST = saved
