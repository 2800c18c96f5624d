"""Input validation and small helpers shared by the Lightning attention forms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.weak import WeakTensorKeyDictionary

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / state dtype: fp64 for fp64 inputs, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class Checked:
    """Validated call: accumulation dtype, scale, decay slopes ``[H]`` and the sequences' ``(start, end)``."""

    acc: torch.dtype
    scale: float
    slopes: torch.Tensor
    bounds: list[tuple[int, int]]  # one (start, end) per sequence: [(0, T)] without cu_seqlens


def check_decay(decay, n_heads: int, device, acc: torch.dtype) -> torch.Tensor:
    """``decay`` as a ``[H]`` tensor of finite, non-negative slopes in ``acc`` on ``device``."""
    if not isinstance(decay, torch.Tensor):
        raise ValueError(f"decay must be a tensor of shape [H={n_heads}], got {type(decay).__name__}")
    if decay.shape != (n_heads,):
        raise ValueError(f"decay must have shape [H={n_heads}], got {tuple(decay.shape)}")
    if not decay.is_floating_point():
        raise ValueError(f"decay must be floating point, got {decay.dtype}")
    # a value check syncs with the device and cannot be traced: skipped inside torch.compile, and done once
    # per tensor version (a layer passes the same decay tensor at every call); inference tensors have no
    # version counter, so theirs are checked at every call
    if torch.compiler.is_compiling():
        return decay.to(device=device, dtype=acc)
    version = None if decay.is_inference() else decay._version
    if version is None or _VALID_DECAY.get(decay) != version:
        d = decay.detach()
        if not bool(torch.isfinite(d).all() & (d >= 0).all()):
            raise ValueError("decay must be finite and >= 0 (lambda = exp(-decay); 0 means no decay)")
        if version is not None:
            _VALID_DECAY[decay] = version
    return decay.to(device=device, dtype=acc)


# decay tensors whose values were checked, with the version counter they had then (in-place writes bump it)
_VALID_DECAY = WeakTensorKeyDictionary()


def check_chunk_size(chunk_size) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def check_state(state: torch.Tensor | None, shape: tuple[int, ...], name: str) -> None:
    if state is None:
        return
    if not isinstance(state, torch.Tensor) or not state.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape {list(shape)}")
    if tuple(state.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(state.shape)}")


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                 scale: float | None, initial_state: torch.Tensor | None,
                 cu_seqlens: torch.Tensor | None) -> Checked:
    """Validate the common contract (see :mod:`mixarch.ops.lightning`) and resolve defaults."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a [B, T, H, D] tensor, got {got}")
        if x.dtype not in _FLOATS:
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, Dv] with B, T, H of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] == 0 or v.shape[-1] == 0:
        raise ValueError("head dims Dk and Dv must be positive")
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    acc = acc_dtype(q.dtype)
    slopes = check_decay(decay, h, q.device, acc)
    if scale is None:
        scale = dk ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a float or None, got {type(scale).__name__}")
    if cu_seqlens is None:
        bounds = [(0, t)]
        n_states = b
    else:
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be a 1-D integer tensor [N + 1]")
        if cu_seqlens.is_floating_point() or cu_seqlens.is_complex() or cu_seqlens.dtype == torch.bool:
            raise ValueError(f"cu_seqlens must be an integer tensor, got {cu_seqlens.dtype}")
        if b != 1:
            raise ValueError(f"cu_seqlens needs packed inputs with B == 1, got B = {b}")
        cu = [int(x) for x in cu_seqlens.tolist()]
        if cu[0] != 0 or cu[-1] != t:
            raise ValueError(f"cu_seqlens must start at 0 and end at T = {t}, got {cu[0]} .. {cu[-1]}")
        if any(e < s for s, e in zip(cu[:-1], cu[1:])):
            raise ValueError("cu_seqlens must be non-decreasing")
        bounds = list(zip(cu[:-1], cu[1:]))
        n_states = len(bounds)
    check_state(initial_state, (n_states, h, dk, dv), "initial_state")
    return Checked(acc=acc, scale=float(scale), slopes=slopes, bounds=bounds)


def initial_states(initial_state: torch.Tensor | None, n: int, h: int, dk: int, dv: int, acc: torch.dtype,
                   device) -> torch.Tensor:
    """``initial_state`` in ``acc`` (zeros when absent), ``[n, H, Dk, Dv]``."""
    if initial_state is None:
        return torch.zeros(n, h, dk, dv, dtype=acc, device=device)
    return initial_state.to(device=device, dtype=acc)
