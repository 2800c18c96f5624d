"""Kernel backends per op: what ``mixarch_register_kernels`` registers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixarch.errors import DuplicateRegistrationError, MixarchError, unknown_name_message


def _always(*args: Any, **kwargs: Any) -> bool:
    return True


@dataclass(frozen=True)
class KernelSpec:
    """One implementation (``backend``) of an op.

    ``impl`` has the op's signature. ``is_available()`` returns True or a string saying why the backend cannot
    run in this process (no GPU, Triton missing, ...). ``supports(*args, **kwargs)`` says whether it handles
    these particular inputs (device, dtype, shapes). By default the highest ``priority`` available backend that
    supports the inputs runs, among those whose ``default_devices`` (None: any) include the inputs' device:
    Triton backends can take CPU tensors under ``TRITON_INTERPRET=1`` but are only chosen for CUDA tensors
    unless ``MIXARCH_KERNELS`` forces them.
    """

    op: str
    backend: str
    impl: Callable[..., Any]
    priority: int = 0
    supports: Callable[..., bool] = _always
    is_available: Callable[[], bool | str] = lambda: True
    description: str = ""
    plugin: str = ""
    default_devices: tuple[str, ...] | None = None


class KernelRegistry:
    """op -> backend -> :class:`KernelSpec`; a second registration of an (op, backend) pair is an error."""

    kind = "kernel"

    def __init__(self) -> None:
        self._ops: dict[str, dict[str, KernelSpec]] = {}

    def add(self, spec: KernelSpec, *, override: bool = False) -> None:
        backends = self._ops.setdefault(spec.op, {})
        previous = backends.get(spec.backend)
        if previous is not None and not override:
            raise DuplicateRegistrationError(
                f"kernel {spec.op!r} backend {spec.backend!r} is registered by both plugin {previous.plugin!r} and "
                f"plugin {spec.plugin!r}; register with override=True to replace it deliberately")
        backends[spec.backend] = spec

    def ops(self) -> list[str]:
        return sorted(self._ops)

    def backends(self, op: str) -> list[KernelSpec]:
        """The backends of ``op``, highest priority first."""
        if op not in self._ops:
            raise MixarchError(unknown_name_message("kernel op", op, self._ops))
        return sorted(self._ops[op].values(), key=lambda s: (-s.priority, s.backend))

    def get(self, op: str, backend: str) -> KernelSpec:
        backends = {s.backend: s for s in self.backends(op)}
        if backend not in backends:
            raise MixarchError(unknown_name_message(f"backend of op {op!r}:", backend, backends))
        return backends[backend]

    def __iter__(self):
        return (spec for op in self.ops() for spec in self.backends(op))
