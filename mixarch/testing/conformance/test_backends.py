"""Run every registered kernel backend through its op's conformance recipe.

Collected by mixarch's test suite (tests/test_kernel_conformance.py imports these tests) and runnable for a
third-party kernel package with ``pytest --pyargs mixarch.testing.conformance.test_backends``.
On a CPU machine Triton backends run under ``TRITON_INTERPRET=1`` on tiny fp32 shapes; on a GPU the full
matrix (fp32, bf16, fp16) runs.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mixarch.testing.conformance.infllm_v2  # noqa: F401 - registers recipes
import mixarch.testing.conformance.lightning  # noqa: F401 - registers recipes
from mixarch.plugins import get_host
from mixarch.testing.conformance import CONFORMANCE, check_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DTYPES = [torch.float32, torch.bfloat16, torch.float16] if DEVICE == "cuda" else [torch.float32, torch.bfloat16]


def pairs() -> list[tuple[str, str]]:
    return [(spec.op, spec.backend) for spec in get_host().kernels]


def test_every_registered_op_has_a_conformance_recipe():
    missing = sorted({op for op, _ in pairs()} - set(CONFORMANCE))
    assert not missing, f"ops without a conformance recipe: {missing}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op, backend", pairs())
@given(data=st.data())
def test_backend_matches_reference(op, backend, dtype, data):
    spec = get_host().kernels.get(op, backend)
    available = spec.is_available()
    if available is not True:
        pytest.skip(f"{backend} unavailable here: {available}")
    tiny = DEVICE == "cpu" and backend != "reference"
    if tiny and dtype != torch.float32:
        pytest.skip("the Triton interpreter computes 16-bit dots in fp32: only fp32 is meaningful on CPU")
    check_backend(op, backend, data, dtype=dtype, device=DEVICE, tiny=tiny)
