"""Which SDPA backends softmax attention allows: never cuDNN where the key length grows call by call."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mixarch.ops.softmax import _backends

CUDA_TENSOR = SimpleNamespace(is_cuda=True)  # the choice depends only on the device; no GPU on CI


@pytest.mark.parametrize("t_q, t_k", [(1, 100), (16, 4096)])
def test_decode_and_chunked_prefill_exclude_cudnn(t_q, t_k):
    # cuDNN builds an execution graph per key length: ~34 ms per decode step on an H200 (ops/softmax.py)
    with _backends(CUDA_TENSOR, t_q, t_k):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored afterwards


def test_backends_the_user_disabled_stay_disabled():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION]):
        with _backends(CUDA_TENSOR, 1, 100):
            assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.cudnn_sdp_enabled()
            assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.mem_efficient_sdp_enabled()
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):  # cuDNN alone: kept
        with _backends(CUDA_TENSOR, 1, 100):
            assert torch.backends.cuda.cudnn_sdp_enabled()


def test_full_prefill_and_cpu_keep_the_default_choice():
    with _backends(CUDA_TENSOR, 4096, 4096):
        assert torch.backends.cuda.cudnn_sdp_enabled()
    with _backends(torch.ones(1), 1, 100):
        assert torch.backends.cuda.cudnn_sdp_enabled()
