"""Kernel backends per op, registered through ``mixarch_register_kernels`` and chosen at call time."""

from mixarch.kernels.dispatch import KERNELS_ENV, call, choose
from mixarch.kernels.registry import KernelRegistry, KernelSpec

__all__ = ["KERNELS_ENV", "KernelRegistry", "KernelSpec", "call", "choose"]
