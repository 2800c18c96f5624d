"""Tensor comparisons with dtype-aware tolerances.

fp32 results are compared elementwise against fp64 references (``assert_close``); 16-bit results,
whose chunked accumulation order differs from the reference, by relative RMSE (``assert_close_rel``).
"""

from __future__ import annotations

import torch

# relative RMSE ||out - ref|| / ||ref|| allowed per dtype of the tensor under test, for one op (a kernel)
REL_RMSE_TOL = {torch.float16: 5e-3, torch.bfloat16: 5e-3, torch.float32: 1e-5, torch.float64: 1e-12}
# for a whole 16-bit layer or model: about six rounded stages (projections, norms, rotation, attention, gate,
# output projection), each adding ~2.3e-3 relative RMS (bf16), give ~5.6e-3 expected, so allow 1e-2
LAYER_REL_RMSE_TOL = {torch.float16: 1e-2, torch.bfloat16: 1e-2}


def rel_rmse(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``||out - ref||_2 / ||ref||_2`` computed in fp64 (0 when both are exactly zero)."""
    ref64, out64 = ref.detach().double(), out.detach().double()
    num = (out64 - ref64).norm().item()
    den = ref64.norm().item()
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def assert_close_rel(name: str, ref: torch.Tensor, out: torch.Tensor, tol: float | None = None) -> None:
    """Fail unless ``out`` matches ``ref`` to relative RMSE ``tol`` (default by ``out.dtype``).

    Any NaN or Inf in ``out`` fails. Shapes must match exactly.
    """
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values in output"
    tol = REL_RMSE_TOL.get(out.dtype, 5e-3) if tol is None else tol
    err = rel_rmse(ref, out)
    assert err <= tol, f"{name}: relative RMSE {err:.3e} > {tol:.1e}"


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, *, rtol: float | None = None,
                 atol: float | None = None) -> None:
    """Elementwise comparison (torch's defaults for ``out.dtype`` unless given), casting ``ref`` to ``out``'s dtype."""
    assert torch.isfinite(out).all(), f"{name}: non-finite values in output"
    torch.testing.assert_close(out, ref.to(out.dtype), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
