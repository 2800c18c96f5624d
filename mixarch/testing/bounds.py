"""Out-of-bounds detection for Triton kernels run by the interpreter (``TRITON_INTERPRET=1``).

On a GPU a load or store outside its tensor is an illegal memory access at best (the CUDA context dies and
the *next* synchronizing call reports it) and silent corruption at worst. The interpreter performs every
masked-in access on host memory without checking it. Inside :func:`checked_memory`, each launch records the
byte range of every tensor argument (its view: ``data_ptr()`` to the last element its strides reach) and
every masked-in load and store must fall inside one of them, else :class:`OutOfBounds` names the kernel, the
access and how far it strays. Use it to run kernels on CPU at the tile sizes they use on the GPU.

Limits: pointers carry no provenance in the interpreter, so an access that strays into *another* argument of
the same launch passes; plain and masked loads, stores and atomic read-modify-writes are checked, and tensor
descriptor loads (the interpreter turns them into masked loads of their base tensor, the descriptor's bounds as
the mask); block pointers are not (mixarch's kernels do not use them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


class OutOfBounds(AssertionError):
    """A Triton kernel touched memory outside every tensor argument of its launch."""


def _byte_range(t: torch.Tensor) -> tuple[int, int] | None:
    """``[first byte, one past the last byte]`` that ``t``'s view can address (None when empty)."""
    if t.numel() == 0:
        return None
    if any(s < 0 for s in t.stride()):
        raise ValueError("negative strides are not supported by the bounds checker")
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _tensors(args) -> Iterator[torch.Tensor]:
    from triton.tools.tensor_descriptor import TensorDescriptor

    for arg in args:
        if isinstance(arg, torch.Tensor):
            yield arg
        elif isinstance(arg, TensorDescriptor):
            yield arg.base
        elif isinstance(arg, tuple):
            yield from _tensors(arg)


class _Launch:
    """The launch being interpreted: its kernel's name and its tensor arguments' byte ranges."""

    kernel = "?"
    ranges: list[tuple[int, int]] = []


def _check(kind: str, ptrs, mask) -> None:
    addr = np.asarray(ptrs.data, dtype=np.uint64)
    live = np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)
    addr = addr[live].astype(np.int64)
    if addr.size == 0:
        return
    size = np.dtype(_np_dtype(ptrs)).itemsize
    inside = np.zeros(addr.shape, dtype=bool)
    for lo, hi in _Launch.ranges:
        inside |= (addr >= lo) & (addr + size <= hi)
    if inside.all():
        return
    bad = addr[~inside]
    first = int(bad[0])
    nearest = min(_Launch.ranges, key=lambda r: min(abs(first - r[0]), abs(first - r[1])), default=None)
    where = "" if nearest is None else (
        f"; the first is {first - nearest[1]} bytes past the end of the nearest argument"
        if first >= nearest[1] else f"; the first is {nearest[0] - first} bytes before the nearest argument")
    raise OutOfBounds(f"{_Launch.kernel}: {bad.size} masked-in {kind} address(es) of {size}-byte elements outside "
                      f"every tensor argument{where}")


def _np_dtype(ptrs):
    from triton.runtime.interpreter import _get_np_dtype

    return _get_np_dtype(ptrs.get_element_ty())


@contextlib.contextmanager
def checked_memory() -> Iterator[None]:
    """Within this block, interpreted Triton launches fail with :class:`OutOfBounds` on any masked-in load or
    store outside their tensor arguments. Needs ``TRITON_INTERPRET=1`` (set before the kernels are defined)."""
    from triton.runtime import interpreter

    executor, builder = interpreter.GridExecutor, interpreter.InterpreterBuilder
    saved = (executor._init_args_hst, builder.create_masked_load, builder.create_masked_store,
             builder.create_atomic_rmw)
    init_args, load, store, atomic = saved

    def init_args_checked(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        _Launch.kernel = getattr(self.fn, "__name__", "?")
        _Launch.ranges = [r for t in _tensors([*args_hst, *kwargs_hst.values()]) if (r := _byte_range(t))]
        return args_hst, kwargs_hst

    def load_checked(self, ptrs, mask, other, *rest, **options):
        _check("load", ptrs, mask)
        return load(self, ptrs, mask, other, *rest, **options)

    def store_checked(self, ptrs, value, mask, *rest, **options):
        _check("store", ptrs, mask)
        return store(self, ptrs, value, mask, *rest, **options)

    def atomic_checked(self, op, ptr, val, mask, *rest, **options):
        _check("atomic", ptr, mask)
        return atomic(self, op, ptr, val, mask, *rest, **options)

    def install(fns):
        (executor._init_args_hst, builder.create_masked_load, builder.create_masked_store,
         builder.create_atomic_rmw) = fns

    install((init_args_checked, load_checked, store_checked, atomic_checked))
    try:
        yield
    except interpreter.InterpreterError as err:  # the interpreter wraps what a kernel raises: unwrap ours
        if isinstance(err.__cause__, OutOfBounds):
            raise err.__cause__ from None
        raise
    finally:
        install(saved)
