"""Registers the Triton backends of ``lightning_attention`` and ``lightning_step`` (priority 10, above the
reference). They are chosen by default for CUDA tensors only (``default_devices``); CPU tensors run them under
``TRITON_INTERPRET=1`` when forced (``MIXARCH_KERNELS=triton``) or called directly, as the conformance suite
does. Triton is imported on the first call, so this plugin loads on machines without it."""

from __future__ import annotations

from mixarch.hookspecs import hookimpl
from mixarch.kernels.triton import triton_available


def _supports_attention(*args, **kwargs) -> bool:
    from mixarch.kernels.triton.lightning.op import unsupported_attention

    return unsupported_attention(*args, **kwargs) is None


def _supports_step(*args, **kwargs) -> bool:
    from mixarch.kernels.triton.lightning.op import unsupported_step

    return unsupported_step(*args, **kwargs) is None


def _attention(*args, **kwargs):
    from mixarch.kernels.triton.lightning.op import lightning_attention

    return lightning_attention(*args, **kwargs)


def _step(*args, **kwargs):
    from mixarch.kernels.triton.lightning.op import lightning_step

    return lightning_step(*args, **kwargs)


@hookimpl
def mixarch_register_kernels(register):
    register("lightning_attention", "triton", _attention, priority=10, supports=_supports_attention,
             is_available=triton_available, default_devices=("cuda",),
             description="Triton chunked forward/backward (segment-parallel state passing): fp16/bf16/fp32, "
                         "Dk, Dv <= 128, T >= 1, no decay gradient")
    register("lightning_step", "triton", _step, priority=10, supports=_supports_step,
             is_available=triton_available, default_devices=("cuda",),
             description="Triton fused decode step: fp16/bf16/fp32, Dk, Dv <= 128, not differentiable")
