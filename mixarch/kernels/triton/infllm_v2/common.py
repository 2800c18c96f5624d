"""Launch helpers shared by the InfLLM-V2 Triton kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from mixarch.kernels.triton import bind_context, interpreting

#: ``exp(x) == exp2(x * LOG2E)``: the kernels keep logits and log-sum-exps in the log2 domain.
LOG2E = 1.4426950408889634
#: dtypes the kernels take (others fall through to the reference)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: largest head dimension (one register tile)
MAX_HEAD_DIM = 256


def dot_args(dtype: torch.dtype) -> dict:
    """Constexprs of every kernel: ``UPCAST`` (the interpreter computes 16-bit dots wrongly: upcast tiles to fp32
    before ``tl.dot``) and ``PREC`` (fp32 inputs use exact fp32 products, not tf32)."""
    return dict(UPCAST=interpreting(), PREC="ieee" if dtype == torch.float32 else "tf32")


def launch(num_warps: int, num_stages: int = 2, pdl: bool | None = None) -> dict:
    """Launch options (the interpreter ignores them); for kernels with a ``PDL`` constexpr, ``pdl`` sets it and
    launches with programmatic dependent launch when true (:mod:`mixarch.kernels.triton.pdl`)."""
    opts = {} if pdl is None else dict(PDL=pdl)
    if pdl:
        opts["launch_pdl"] = True
    return opts if interpreting() else dict(num_warps=num_warps, num_stages=num_stages, **opts)


def num_sms(device: torch.device) -> int:
    """Multiprocessors of ``device`` (a nominal 132 on CPU, so that launch heuristics stay testable)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


@triton.jit
def as_fp32(x):
    """A float kernel argument as an fp32 scalar (torch.compile passes Python floats as fp64)."""
    return (tl.zeros([], tl.float32) + x).to(tl.float32)


def row_descriptor(x: torch.Tensor, rows: int) -> TensorDescriptor:
    """The ``[1, rows, D]`` block descriptor of ``x`` ``[B, N, H, D]`` viewed as ``[B, N, H * D]``: a block is
    ``rows`` consecutive rows of one head (rows past ``N``, or before 0, read as zeros)."""
    b, n, h, d = x.shape
    bind_context(x.device)
    return TensorDescriptor.from_tensor(x.view(b, n, h * d), [1, rows, d])
