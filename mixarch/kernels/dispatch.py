"""Choose the backend that runs an op.

Default: the highest-priority backend that is available in this process and supports the call's inputs
(built-ins: Triton for CUDA tensors, the torch reference elsewhere). ``MIXARCH_KERNELS`` forces a choice:
``reference`` or ``triton`` for every op, or per op, ``lightning_attention=triton,infllm_v2_select=reference``.
A forced backend that cannot run is an error, never a silent fallback.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mixarch.errors import MixarchError
from mixarch.kernels.registry import KernelSpec

KERNELS_ENV = "MIXARCH_KERNELS"


def forced_backend(op: str) -> str | None:
    """The backend ``MIXARCH_KERNELS`` forces for ``op``, if any."""
    value = os.environ.get(KERNELS_ENV, "").strip()
    if not value:
        return None
    if "=" not in value:
        return value
    for item in value.split(","):
        name, _, backend = item.partition("=")
        if name.strip() == op:
            return backend.strip()
    return None


def choose(op: str, *args: Any, **kwargs: Any) -> KernelSpec:
    """The backend that runs ``op`` on these arguments."""
    from mixarch import plugins

    if plugins._HOST is None and torch.compiler.is_compiling():
        raise MixarchError("the plugin host is built at first use and cannot be traced: call "
                           "mixarch.plugins.get_host() (or build the model) before torch.compile")
    registry = plugins.get_host().kernels
    forced = forced_backend(op)
    if forced is not None:
        try:
            spec = registry.get(op, forced)
        except MixarchError as err:
            raise MixarchError(f"{KERNELS_ENV}={os.environ[KERNELS_ENV]}: {err.message}") from None
        available = spec.is_available()
        if available is not True:
            raise MixarchError(f"{KERNELS_ENV}={os.environ[KERNELS_ENV]}: backend {forced!r} of {op!r} cannot run "
                               f"here: {available}")
        if not spec.supports(*args, **kwargs):
            raise MixarchError(f"{KERNELS_ENV}={os.environ[KERNELS_ENV]}: backend {forced!r} of {op!r} does not "
                               f"support these inputs ({spec.description or 'see its plugin'}); "
                               f"{_describe(args)}")
        return spec
    device = _device(args, kwargs)
    for spec in registry.backends(op):
        if (spec.default_devices is None or device in spec.default_devices) and spec.is_available() is True \
                and spec.supports(*args, **kwargs):
            return spec
    raise MixarchError(f"no backend of {op!r} supports these inputs "
                       f"(registered: {', '.join(s.backend for s in registry.backends(op))})")


def _device(args: tuple, kwargs: dict) -> str | None:
    """The device type of the first tensor argument."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a.device.type
    return None


def _describe(args: tuple) -> str:
    return "inputs " + ", ".join(f"{tuple(a.shape)} {str(a.dtype).removeprefix('torch.')} {a.device.type}"
                                 for a in args if isinstance(a, torch.Tensor))


def call(op: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``op`` with the chosen backend."""
    return choose(op, *args, **kwargs).impl(*args, **kwargs)
