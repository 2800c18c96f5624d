"""Count host reads of tensor values: on a GPU each one (``bool(t)``, ``t.item()``, ``t.tolist()``, ``int(t)``,
``float(t)``) waits for the device, so the host cannot run ahead and queue the next kernels. A decode step
should have exactly one: reading the new tokens."""

from __future__ import annotations

import collections
import contextlib
import traceback
from collections.abc import Iterator

import torch

_READS = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def host_reads(package: str = "mixarch") -> Iterator[collections.Counter]:
    """Within the block, count value reads of non-empty tensors by call site (the innermost frame of
    ``package``, as ``path:line``), in a Counter that the block receives."""
    counts: collections.Counter = collections.Counter()
    saved = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name):
        read = saved[name]

        def counted(self, *args, **kwargs):
            if self.numel() > 0:
                frames = [f for f in traceback.extract_stack()[:-1] if f"{package}/" in f.filename.replace("\\", "/")]
                if frames:
                    site = frames[-1]
                    counts[f"{site.filename.rsplit(package + '/', 1)[-1]}:{site.lineno}"] += 1
            return read(self, *args, **kwargs)

        return counted

    for name in _READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, read in saved.items():
            setattr(torch.Tensor, name, read)
