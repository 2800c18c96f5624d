"""Every Triton kernel, run by the interpreter with each memory access checked (:mod:`mixarch.testing.bounds`),
for 4- and 2-byte elements, with the Lightning kernels at their GPU chunk, state tile and segment lengths on the
conformance recipe's full-size shapes (the GPU matrix: head dims up to 128, T up to 1000, varlen with empty
sequences). Forward and backward; fp32 cases are also checked against the reference (outputs, states,
gradients), so the Lightning kernels' GPU geometry is verified numerically on CPU too. The interpreter's 16-bit
dots are not exact, so 16-bit cases check addressing only.
"""

from __future__ import annotations

import contextlib
import os
from unittest import mock

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("checks interpreted kernels (TRITON_INTERPRET=1, set by conftest.py on CPU)", allow_module_level=True)
pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mixarch.testing.conformance.infllm_v2  # noqa: E402,F401 - registers recipes
import mixarch.testing.conformance.lightning  # noqa: E402,F401 - registers recipes
from mixarch.kernels.triton.infllm_v2 import sparse  # noqa: E402
from mixarch.kernels.triton.lightning import chunk, op  # noqa: E402
from mixarch.plugins import get_host  # noqa: E402
from mixarch.testing.bounds import OutOfBounds, checked_memory  # noqa: E402
from mixarch.testing.conformance import CONFORMANCE, check_backend  # noqa: E402
from mixarch.testing.strategies import seeded_randn  # noqa: E402

TRITON_OPS = sorted(spec.op for spec in get_host().kernels if spec.backend == "triton")


@contextlib.contextmanager
def gpu_tiling():
    """The GPU geometry: for Lightning 64-token chunks, 64-wide state tiles, segments of >= 256 tokens
    (``interpreting()`` is what picks the small interpreter geometry; 16-bit operands then go to the dots as on
    a GPU); for InfLLM-V2 the window kernels' and the CSR dk / dv kernel's query tiles of CUDA (the other
    InfLLM-V2 tiles are the same under the interpreter)."""
    window_rows, csr_queries = sparse._window_rows, sparse._csr_queries
    with mock.patch.multiple(chunk, CHUNK=64, STATE_TILE=64, interpreting=lambda: False), \
            mock.patch.object(op, "CHUNK", 64), \
            mock.patch.multiple(sparse, _window_rows=lambda geo, bs, _cuda, kernel: window_rows(geo, bs, True, kernel),
                                _csr_queries=lambda gp, _cuda: csr_queries(gp, True)):
        yield


def _run(op_name: str, case) -> None:
    spec = CONFORMANCE[op_name]
    impl = get_host().kernels.get(op_name, "triton").impl
    grad = spec.differentiable and bool(case.grad_args)
    args = [a.detach().requires_grad_(grad and i in case.grad_args)
            if isinstance(a, torch.Tensor) and a.is_floating_point() else a for i, a in enumerate(case.args)]
    outs = [t for t in spec.outputs(impl(*args, **case.kwargs)).values()
            if isinstance(t, torch.Tensor) and t.requires_grad]
    if grad and outs:
        upstream = [seeded_randn(t.shape, i, dtype=t.dtype) for i, t in enumerate(outs)]
        torch.autograd.grad(outs, [args[i] for i in case.grad_args], upstream, allow_unused=True)


@settings(max_examples=int(os.environ.get("MIXARCH_BOUNDS_EXAMPLES", "3")), deadline=None)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)  # 4- and 2-byte elements
@pytest.mark.parametrize("op_name", TRITON_OPS)
@given(data=st.data())
def test_triton_kernels_stay_in_bounds(op_name, dtype, data):
    # the Lightning kernels get the GPU's geometry here, so full-size shapes; the InfLLM-V2 kernels' GPU tiles
    # are small enough for the recipes' small shapes to cover their edges (and those are faster)
    # (MIXARCH_BOUNDS_FULL=1: full-size shapes for every op; MIXARCH_BOUNDS_EXAMPLES=N: more examples)
    tiny = not op_name.startswith("lightning") and os.environ.get("MIXARCH_BOUNDS_FULL") != "1"
    with gpu_tiling(), checked_memory():
        if dtype == torch.float32:  # fp32 dots are exact in the interpreter: check the numbers too
            check_backend(op_name, "triton", data, dtype=dtype, device="cpu", tiny=tiny)
        else:
            _run(op_name, CONFORMANCE[op_name].make_case(data, dtype, "cpu", tiny))


@pytest.mark.parametrize("lengths", [[0, 5, 1, 0, 300], [256, 0, 257], [1000]])
@pytest.mark.parametrize("dims", [(128, 16), (16, 128)])
def test_lightning_varlen_segments_stay_in_bounds(lengths, dims):
    """Packed sequences across the GPU's 256-token segments, empty ones included, bf16, forward and backward
    with both states."""
    from mixarch.ops.lightning import alibi_slopes
    from mixarch.testing.strategies import cu_seqlens_from

    t, h = sum(lengths), 3
    q, k = (seeded_randn((1, t, h, dims[0]), i, dtype=torch.bfloat16).requires_grad_() for i in (0, 1))
    v = seeded_randn((1, t, h, dims[1]), 2, dtype=torch.bfloat16).requires_grad_()
    h0 = seeded_randn((len(lengths), h, *dims), 3).requires_grad_()
    with gpu_tiling(), checked_memory():
        o, ht = op.lightning_attention(q, k, v, alibi_slopes(h), initial_state=h0, output_final_state=True,
                                       cu_seqlens=cu_seqlens_from(lengths))
        torch.autograd.grad((o.float().sum() + ht.sum()), [q, k, v, h0])


@pytest.mark.parametrize("t_q", [70, 23, 1])
def test_infllm_v2_window_tiles_stay_in_bounds(monkeypatch, t_q):
    """The forced-block window kernels at their CUDA tiles (8 queries x 16 heads), chunked prefill starting
    mid-tile and mid-block, forward (few programs per SM: window tiles, not split slots) and backward, fp32
    against the reference."""
    from mixarch.ops.infllm_v2 import sparse_block_attention

    monkeypatch.setattr(sparse, "num_sms", lambda _device: 1)
    t, block = 70, 16
    q = seeded_randn((1, t_q, 32, 16), 0).requires_grad_()
    k, v = (seeded_randn((1, t, 2, 16), i).requires_grad_() for i in (1, 2))
    own = ((torch.arange(t_q) + t - t_q) // block).view(1, 1, t_q, 1).expand(1, 2, t_q, 1)
    idx = torch.cat([own, torch.zeros_like(own), torch.full_like(own, -1)], -1)  # own + init block, padding
    forcing = dict(init_blocks=1, local_blocks=1)
    do = seeded_randn((1, t_q, 32, 16), 3)
    with gpu_tiling(), checked_memory():
        got = sparse.triton_sparse_block_attention(q, k, v, idx, block_size=block, **forcing)
        got_grads = torch.autograd.grad(got, (q, k, v), do)
    want = sparse_block_attention(q, k, v, idx, block_size=block, **forcing)
    for name, a, b in zip(("o", "dq", "dk", "dv"), (got, *got_grads), (want, *torch.autograd.grad(want, (q, k, v), do))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@triton.jit
def _shift(x, y, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(y + i, tl.load(x + i + 1, mask=i < n), mask=i < n)  # reads one element past the end


def test_the_checker_catches_an_out_of_bounds_load():
    x = seeded_randn((8,), 0)
    y = torch.empty_like(x)
    with pytest.raises(OutOfBounds, match=r"_shift: 1 masked-in load .* 0 bytes past the end"), checked_memory():
        _shift[(1,)](x, y, 8, BLOCK=8)
    _shift[(1,)](x, y, 7, BLOCK=8)  # in bounds: no error, and the checker is gone outside the block
    assert torch.equal(y[:7], x[1:])
