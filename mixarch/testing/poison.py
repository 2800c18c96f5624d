"""NaN poisoning: make freshly allocated float buffers NaN so a read of unwritten memory is caught."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _poisoned(fn):
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dtype in _FLOAT and out.device.type != "meta":
            out.fill_(float("nan"))
        return out

    wrapper.__wrapped__ = fn
    return wrapper


@contextlib.contextmanager
def nan_poison() -> Iterator[None]:
    """Within the block, ``torch.empty``, ``torch.empty_like`` and ``Tensor.new_empty`` return NaN-filled floats."""
    try:  # torch.device(...) contexts cache the constructor functions they redirect: cache the originals first
        from torch.utils._device import _device_constructors

        _device_constructors()
    except ImportError:  # pragma: no cover - older torch
        pass
    saved = (torch.empty, torch.empty_like, torch.Tensor.new_empty)
    torch.empty = _poisoned(saved[0])
    torch.empty_like = _poisoned(saved[1])
    torch.Tensor.new_empty = _poisoned(saved[2])
    try:
        yield
    finally:
        torch.empty, torch.empty_like, torch.Tensor.new_empty = saved
