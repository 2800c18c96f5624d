"""Triton backends. They run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (which must be set
before Python starts, or at least before the kernels are defined: tiny fp32 shapes only; the interpreter is
~10^4 times slower than torch and computes 16-bit dots in fp32)."""

from __future__ import annotations

import os
import threading

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


def pow2(n: int, at_least: int = 1) -> int:
    """The smallest power of two ``>= max(n, at_least)``; plain Python (``triton.next_power_of_2`` costs a few
    microseconds of host time per call, and launches compute dozens of tile sizes)."""
    return max(1 << (max(n, 1) - 1).bit_length(), at_least)


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for host code (``triton.cdiv`` is a constexpr function: microseconds per call)."""
    return -(-a // b)


def launcher(kernel, direct: bool):
    """``kernel`` itself for a direct launch (eager calls), else ``wrap_triton(kernel)`` (inside a ``triton_op``,
    or traced). In eager mode ``wrap_triton`` costs far more host time than the launch itself (an H200 host,
    Triton 3.6: ~250 us against ~60 us per launch of a Lightning kernel; the Lightning forward + backward at 4K
    took 2.5 ms of host time for 0.38 ms of GPU time), so eager calls launch directly, with autograd through
    a ``torch.autograd.Function``, and only traced calls go through the custom ops."""
    from torch.library import wrap_triton

    return kernel if direct else wrap_triton(kernel)


def eager(*tensors: torch.Tensor | None) -> bool:
    """The direct launch path may be taken: no torch.compile tracing, no dispatch mode (``make_fx``, fake tensors)
    and plain tensors (no subclasses, no torch.func transform's wrappers), so that every tracer and transform sees
    the custom ops."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return (not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None
            and all(t is None or (type(t) is torch.Tensor and not wrapped(t)) for t in tensors))


def tma_ready(*tensors: torch.Tensor) -> bool:
    """Whether kernels can read ``tensors`` by TMA: each contiguous and 16-byte aligned, on a GPU with TMA
    (compute capability 9 or more) or the interpreter."""
    if not all(t.is_contiguous() and t.storage_offset() * t.element_size() % 16 == 0 for t in tensors):
        return False
    return interpreting() or all(t.is_cuda and torch.cuda.get_device_capability(t.device)[0] >= 9 for t in tensors)


_BOUND = threading.local()  # the CUDA devices whose context this thread has made current


def bind_context(device: torch.device) -> None:
    """Make ``device``'s CUDA context current on this thread before host-side TMA descriptors are encoded for a
    launch on it. Triton makes the context current only inside the launch, after it has encoded the kernel's
    tensor maps, so a thread whose first CUDA work is such a launch (the autograd engine's worker thread, when a
    backward begins with one) fails with "Failed to create tensor map descriptor: invalid device context". A
    runtime call that needs the context binds it; once per thread and device."""
    if device.type != "cuda":
        return
    bound = _BOUND.__dict__.setdefault("devices", set())
    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in bound:
        with torch.cuda.device(index):
            torch.cuda.is_current_stream_capturing()  # cudaStreamIsCapturing: legal while a graph is captured
        bound.add(index)
