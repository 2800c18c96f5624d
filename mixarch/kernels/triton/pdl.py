"""Programmatic dependent launch (PDL; CUDA, sm_90 and later).

A kernel launched with PDL may be scheduled while the kernel before it on the stream is still running: its
launch latency, and with it the gap between two dependent kernels, overlaps the previous kernel's tail. The
contract every PDL kernel here keeps:

1. the wait (``griddepcontrol.wait``: blocks until the previous kernel has completed and its writes are
   visible) comes before the kernel's first store and before any load of the previous kernel's output;
2. the release (``griddepcontrol.launch_dependents``) comes only after that wait, so the next kernel can start
   only once this one's predecessor is complete, and everything two or more launches back may be read even
   before the wait.
:func:`pdl_handoff` does both, at the kernel's start, or after a prologue that only reads inputs written two or
more launches back (the InfLLM-V2 score kernel's first key tile, ``select.EARLY_SCORES``).

Used where a chain of small dependent launches is latency-bound (InfLLM-V2 decode: selection then stage 2, as
the generator replays it in a CUDA graph). Every direct launch of those kernels uses it; ``MIXARCH_PDL=0``
turns it off. Traced calls (custom ops) and the interpreter compile the waits out.
"""

from __future__ import annotations

import functools
import os

import torch
import triton

from mixarch.errors import MixarchError
from mixarch.kernels.triton import interpreting

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # a Triton without grid dependency control: pdl_enabled() is False, so no kernel
    gdc_wait = gdc_launch_dependents = None  # ever compiles pdl_handoff

#: environment variable: ``1`` (the default) or ``0`` (direct launches without PDL)
ENV = "MIXARCH_PDL"


@functools.cache
def _device_supports(index: int) -> bool:
    from triton.backends.nvidia.compiler import CUDAOptions

    return (gdc_wait is not None and "launch_pdl" in CUDAOptions.__dataclass_fields__
            and torch.cuda.get_device_capability(index)[0] >= 9)


def pdl_enabled(device: torch.device, direct: bool) -> bool:
    """Whether a direct launch on ``device`` uses PDL: CUDA sm_90+, a Triton with grid dependency control,
    not interpreting, :data:`ENV` not ``0``."""
    mode = os.environ.get(ENV, "1")
    if mode not in ("0", "1"):
        raise MixarchError(f"{ENV}={mode!r}: expected 1 (programmatic dependent launch on) or 0 (off)")
    if not direct or device.type != "cuda" or interpreting() or mode == "0":
        return False
    return _device_supports(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def pdl_handoff():
    """Wait for the previous kernel on the stream to complete, then let the next one be scheduled: call it as
    ``if PDL: pdl_handoff()`` first thing in a kernel (``PDL`` a constexpr; without it nothing is emitted)."""
    gdc_wait()
    gdc_launch_dependents()
