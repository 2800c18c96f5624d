"""Hook specifications of the ``mixarch`` plugin system (pluggy project name ``mixarch``).

Every hook receives a ``register`` callback; call it once per component. Built-ins use these same hooks.
Implement them in a module or class decorated with :data:`hookimpl` and expose it through the
``mixarch`` entry-point group::

    [project.entry-points.mixarch]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mixarch")
hookimpl = pluggy.HookimplMarker("mixarch")


@hookspec
def mixarch_register_mixers(register):
    """Register sequence mixers (attention of any kind).

    ``register(name, factory, params, *, family, cache=CacheSpec(...), attention_kv_bytes_per_token=None,
    description="", override=False)``; ``factory(params, ctx, positional) -> nn.Module``.
    """


@hookspec
def mixarch_register_positionals(register):
    """Register positional encodings: ``register(name, factory, params, *, description="", override=False)``;
    ``factory(params, ctx) -> PositionalEncoding``."""


@hookspec
def mixarch_register_ffns(register):
    """Register channel mixers (FFNs): ``register(name, factory, params, *, description="", override=False)``;
    ``factory(params, ctx) -> nn.Module | None``."""


@hookspec
def mixarch_register_selectors(register):
    """Register layout selectors: ``register(name, factory, params, *, description="", override=False)``;
    ``factory(params, n_layers, roles) -> Selection``."""


@hookspec
def mixarch_register_kernels(register):
    """Register kernel backends of ops: ``register(op, backend, impl, *, priority=0, supports=None,
    is_available=None, default_devices=None, description="", override=False)``; see
    :class:`mixarch.kernels.KernelSpec`."""
