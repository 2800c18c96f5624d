"""Kernel conformance: every registered backend of an op, built-in or third-party, checked against the op's
exact reference on hypothesis-drawn cases: outputs, final states and gradients (random upstream gradients),
relative-RMSE tolerance per dtype, NaN-poisoned allocations.

An op's test recipe is an :class:`OpConformance` in :data:`CONFORMANCE` (``register_conformance``); a test then
runs :func:`check_backend` for each ``(op, backend)`` pair of the kernel registry. A third-party kernel package
gets the same checks by running ``pytest --pyargs mixarch.testing.conformance.test_backends`` in its
environment (its backends are registered through the ``mixarch`` entry point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mixarch.testing.compare import REL_RMSE_TOL, assert_close, assert_close_rel
from mixarch.testing.poison import nan_poison


@dataclass
class Case:
    """One call of an op: positional and keyword arguments; ``grad_args`` index the differentiable tensors."""

    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    grad_args: tuple[int, ...] = ()
    label: str = ""


@dataclass(frozen=True)
class OpConformance:
    """How to test any backend of ``op``.

    ``make_case(data, dtype, device, tiny)`` draws a :class:`Case` from a hypothesis ``data`` object (``tiny``:
    shapes small enough for ``TRITON_INTERPRET``); ``reference`` is the exact implementation run in fp64 on the
    same arguments; ``outputs(result)`` names the tensors to compare. fp32 results are compared elementwise
    with ``rtol`` and an ``atol`` of ``fp32_atol`` times the reference's largest magnitude (accumulation order
    differs between backends); 16-bit results by relative RMSE (:data:`REL_RMSE_TOL`).
    """

    op: str
    make_case: Callable[..., Case]
    reference: Callable[..., Any]
    outputs: Callable[[Any], dict[str, torch.Tensor | None]]
    fp32_rtol: float = 2e-5
    fp32_atol: float = 2e-5
    differentiable: bool = True
    check: Callable[[Case, dict, dict], None] | None = None  # replaces the output comparison (e.g. selections)


CONFORMANCE: dict[str, OpConformance] = {}


def register_conformance(spec: OpConformance) -> OpConformance:
    CONFORMANCE[spec.op] = spec
    return spec


def _to64(x: Any, requires_grad: bool = False) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().double().requires_grad_(requires_grad)
    return x


def compare(spec: OpConformance, name: str, ref: torch.Tensor, out: torch.Tensor, dtype: torch.dtype,
            scale: float = 0.0) -> None:
    """fp32 (and fp64) elementwise with scaled tolerances; 16-bit by relative RMSE.

    ``scale`` is the magnitude of the comparison's context (the largest gradient of the same loss): a reference
    that is zero at that scale (e.g. the gradient of a query that sees one key) needs the output to be zero to
    the tolerance times ``scale``, since no accumulation order gives an exact zero.
    """
    ref, out = ref.detach(), out.detach().double().to(ref.device)
    ref_max = ref.abs().max().item() if ref.numel() else 0.0
    if dtype in (torch.float32, torch.float64):
        atol = spec.fp32_atol * max(ref_max, scale, 1e-30)
        assert_close(name, ref, out, rtol=spec.fp32_rtol, atol=atol)
    elif ref_max <= 1e-6 * scale:
        err = out.abs().max().item() if out.numel() else 0.0
        assert err <= REL_RMSE_TOL[dtype] * scale, f"{name}: {err:.3e} where the reference is zero (scale {scale:.3e})"
    else:
        assert_close_rel(name, ref, out, REL_RMSE_TOL[dtype])


def check_backend(op: str, backend: str, data, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                  tiny: bool = False, grads: bool = True) -> Case:
    """Draw one case and check ``backend`` of ``op`` against the reference (outputs, then gradients)."""
    from mixarch.plugins import get_host

    spec = CONFORMANCE[op]
    impl = get_host().kernels.get(op, backend).impl
    case = spec.make_case(data, dtype, device, tiny)
    args = tuple(a.detach().requires_grad_(i in case.grad_args and grads and spec.differentiable)
                 if isinstance(a, torch.Tensor) and a.is_floating_point() else a for i, a in enumerate(case.args))
    ref_args = tuple(_to64(a, i in case.grad_args and grads and spec.differentiable) for i, a in enumerate(args))
    ref_kwargs = {k: _to64(v) for k, v in case.kwargs.items()}
    with nan_poison():
        got = spec.outputs(impl(*args, **case.kwargs))
    want = spec.outputs(spec.reference(*ref_args, **ref_kwargs))
    if spec.check is not None:
        spec.check(case, got, want)
        return case
    for name, ref in want.items():
        out = got[name]
        if ref is None:
            assert out is None, f"{op}[{backend}] {case.label}: {name} should be None"
            continue
        assert out is not None, f"{op}[{backend}] {case.label}: {name} missing"
        if not ref.is_floating_point():
            assert torch.equal(out.cpu(), ref.cpu()), f"{op}[{backend}] {case.label}: {name} differs"
            continue
        compare(spec, f"{op}[{backend}] {case.label}: {name}", ref, out, dtype)
    if not (grads and spec.differentiable and case.grad_args):
        return case
    gen = torch.Generator().manual_seed(1234)
    loss_out, loss_ref = 0.0, 0.0
    for name, ref in want.items():
        if ref is None or not ref.is_floating_point() or not ref.requires_grad:
            continue
        # the backend receives the upstream gradient in its output's dtype: give the reference the same values
        upstream = torch.randn(ref.shape, generator=gen).to(got[name].dtype).double().to(ref.device)
        loss_ref = loss_ref + (ref * upstream).sum()
        loss_out = loss_out + (got[name].double() * upstream).sum()
    with nan_poison():
        out_grads = torch.autograd.grad(loss_out, [args[i] for i in case.grad_args])
    ref_grads = torch.autograd.grad(loss_ref, [ref_args[i] for i in case.grad_args])
    scale = max((r.abs().max().item() for r in ref_grads if r.numel()), default=0.0)
    for i, g, r in zip(case.grad_args, out_grads, ref_grads):
        compare(spec, f"{op}[{backend}] {case.label}: grad of argument {i}", r, g, dtype, scale)
    return case
