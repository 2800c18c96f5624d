"""Registers the InfLLM-V2 Triton backends (priority 10; the torch reference takes what they don't support).

Both run on CUDA tensors (chosen by default), or on CPU tensors under ``TRITON_INTERPRET=1`` when forced with
``MIXARCH_KERNELS=triton`` or called directly (the conformance suite), in fp32 / bf16 / fp16 with head
dimensions up to 256. ``infllm_v2_select`` also needs ``block_size / kernel_stride`` to be a power of two and
``kernel_size - kernel_stride <= block_size`` (a block pools keys of at most one earlier block);
``infllm_v2_sparse_attention`` needs ``block_size <= 256``; ``infllm_v2_decode`` (one query per sequence, no
gradient) needs what the other two need.
"""

from __future__ import annotations

import importlib.util

import torch

from mixarch.hookspecs import hookimpl
from mixarch.kernels.triton import on_triton_device, triton_available

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_DIM = 256
_MAX_GROUP = 64


def _common(q: torch.Tensor, *others: torch.Tensor | None) -> bool:
    ts = [t for t in others if t is not None]
    return (on_triton_device(q) and q.dtype in _DTYPES and q.dim() == 4 and q.shape[-1] <= _MAX_DIM
            and all(t.dtype == q.dtype and t.device == q.device and t.dim() == 4 for t in ts)
            and ts[0].shape[2] > 0 and q.shape[2] % ts[0].shape[2] == 0
            and q.shape[2] // ts[0].shape[2] <= _MAX_GROUP)


def supports_select(q, compressed_k, compressed_k2, t_k, *, block_size, kernel_size, kernel_stride,
                    exact_normalizer, **_) -> bool:
    """Inputs the Triton ``infllm_v2_select`` takes (see the module doc)."""
    if kernel_stride < 1 or block_size % kernel_stride or kernel_size % kernel_stride:
        return False
    r = block_size // kernel_stride
    return (_common(q, compressed_k, None if exact_normalizer else compressed_k2) and r & (r - 1) == 0
            and kernel_size - kernel_stride <= block_size)


def supports_sparse(q, k, v, indices, *, block_size, **_) -> bool:
    """Inputs the Triton ``infllm_v2_sparse_attention`` takes (see the module doc)."""
    return (_common(q, k, v) and v.shape[-1] <= _MAX_DIM and 1 <= block_size <= 256
            and indices.dtype in (torch.int32, torch.int64) and indices.device == q.device)


def supports_decode(q, k, v, compressed_k, compressed_k2, *, block_size, kernel_size, kernel_stride,
                    exact_normalizer, **_) -> bool:
    """Inputs the Triton ``infllm_v2_decode`` takes (see the module doc)."""
    from mixarch.ops.infllm_v2.attention import needs_grad

    return (_common(q, k, v) and q.shape[1] == 1 and k.shape[1] >= 1 and not needs_grad(q, k, v)
            and v.shape[-1] <= _MAX_DIM and 1 <= block_size <= 256
            and supports_select(q, compressed_k, compressed_k2, k.shape[1], block_size=block_size,
                                kernel_size=kernel_size, kernel_stride=kernel_stride,
                                exact_normalizer=exact_normalizer))


def infllm_v2_select(*args, **kwargs):
    from mixarch.kernels.triton.infllm_v2.select import triton_infllm_v2_select

    return triton_infllm_v2_select(*args, **kwargs)


def infllm_v2_decode(*args, **kwargs):
    from mixarch.kernels.triton.infllm_v2.decode import triton_infllm_v2_decode

    return triton_infllm_v2_decode(*args, **kwargs)


def infllm_v2_sparse_attention(*args, **kwargs):
    from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention

    return triton_sparse_block_attention(*args, **kwargs)


@hookimpl
def mixarch_register_kernels(register):
    if importlib.util.find_spec("triton") is not None:  # define the custom ops now, not inside a compiled graph
        importlib.import_module("mixarch.kernels.triton.infllm_v2.select")
        importlib.import_module("mixarch.kernels.triton.infllm_v2.sparse")
        importlib.import_module("mixarch.kernels.triton.infllm_v2.decode")
    register("infllm_v2_select", "triton", infllm_v2_select, priority=10, is_available=triton_available,
             supports=supports_select, default_devices=("cuda",),
             description="Triton stage 1 (fused scores + block pooling) + top-k")
    register("infllm_v2_sparse_attention", "triton", infllm_v2_sparse_attention, priority=10,
             is_available=triton_available, supports=supports_sparse, default_devices=("cuda",),
             description="Triton block-sparse attention: forced blocks as dense tiles, free blocks gathered "
                         "with G heads per tile; CSR backward")
    register("infllm_v2_decode", "triton", infllm_v2_decode, priority=10, is_available=triton_available,
             supports=supports_decode, default_devices=("cuda",),
             description="Triton decode step: stage-1 scores, a top-k by rank counting over parallel programs, "
                         "stage 2 over the rank-ordered blocks")
