"""Triton backends. They run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (which must be set
before Python starts, or at least before the kernels are defined: tiny fp32 shapes only; the interpreter is
~10^4 times slower than torch and computes 16-bit dots in fp32)."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when Triton kernels run in the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool | str:
    """True, or why Triton backends cannot run in this process."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return f"triton is not importable ({err})"
    if torch.cuda.is_available() or interpreting():
        return True
    return "no CUDA device; set TRITON_INTERPRET=1 before starting Python to run Triton kernels on the CPU"


def on_triton_device(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can take ``t``: a CUDA tensor, or a CPU tensor while interpreting."""
    return t.is_cuda or (interpreting() and t.device.type == "cpu")
