"""Mean-pooled compressed keys for InfLLM-V2 stage 1, and their incremental (decode) cache.

Compressed key ``j`` of a key sequence ``k`` ``[B, T, H, D]`` is ``mean(k[:, j*s : j*s + l])`` with window
``l = kernel_size`` and stride ``s = kernel_stride``; only complete windows exist, so there are
``(T - l) // s + 1`` of them (0 when ``T < l``). This is the released ``CompressK`` /
``calc_chunks_with_stride`` (MiniCPM-SALA ``modeling_minicpm_sala.py``). The coarse keys used for the
approximate normalizer ("C2") are the same with ``4 * l`` and ``4 * s`` (``compress_k2`` in the released code).

The window mean is a fixed sequential sum (in fp32, fp64 for fp64 keys) followed by one division, rounded
to the keys' dtype. Every window is computed by the same element-wise ops whatever the number of windows
computed together, so the incremental cache reproduces the whole-sequence result bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: C2 uses ``C2_FACTOR * kernel_size`` and ``C2_FACTOR * kernel_stride`` (128 / 64 for the seed's 32 / 16).
C2_FACTOR = 4


def num_compressed(t: int, kernel_size: int, kernel_stride: int) -> int:
    """Number of complete windows ``(t - l) // s + 1`` over ``t`` keys (0 when ``t < l``)."""
    return 0 if t < kernel_size else (t - kernel_size) // kernel_stride + 1


def _check_kernel(kernel_size: int, kernel_stride: int) -> None:
    if kernel_size < 1 or kernel_stride < 1:
        raise ValueError(f"kernel_size ({kernel_size}) and kernel_stride ({kernel_stride}) must be >= 1")


def compress_keys(k: torch.Tensor, kernel_size: int, kernel_stride: int) -> torch.Tensor:
    """Mean-pooled keys ``[B, Nc, H, D]`` (``k``'s dtype) of ``k`` ``[B, T, H, D]``; see the module doc."""
    _check_kernel(kernel_size, kernel_stride)
    b, t, h, d = k.shape
    n = num_compressed(t, kernel_size, kernel_stride)
    if n == 0:
        return k.new_zeros((b, 0, h, d))
    acc = torch.float64 if k.dtype == torch.float64 else torch.float32
    span = (n - 1) * kernel_stride + 1
    total = k[:, 0:span:kernel_stride].to(acc)
    for i in range(1, kernel_size):  # element i of every window at once
        total = total + k[:, i:i + span:kernel_stride].to(acc)
    return (total / kernel_size).to(k.dtype)


def update_compressed(pending: torch.Tensor | None, compressed: torch.Tensor | None, new_k: torch.Tensor,
                      kernel_size: int, kernel_stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed ``new_k`` ``[B, n, H, D]`` (any ``n >= 0``: a prefill chunk or one decoded token) to a cache.

    ``pending`` ``[B, P, H, D]`` holds the raw keys not yet fully consumed (``P < kernel_size``), starting at
    the next window's first key; ``compressed`` ``[B, N, H, D]`` the windows emitted so far (``None`` = empty).
    As in SALA's cache: append the new keys; while ``kernel_size`` keys are pending, emit the mean of the first
    ``kernel_size`` and drop the first ``kernel_stride``. Returns the new ``(pending, compressed)``; the inputs
    are not modified. Feeding a key sequence in any chunks gives exactly :func:`compress_keys` of the whole.
    """
    _check_kernel(kernel_size, kernel_stride)
    b, _, h, d = new_k.shape
    if pending is None:
        pending = new_k.new_zeros((b, 0, h, d))
    if compressed is None:
        compressed = new_k.new_zeros((b, 0, h, d))
    buf = torch.cat([pending, new_k.to(pending.dtype)], dim=1)
    emitted = compress_keys(buf, kernel_size, kernel_stride)
    n = emitted.shape[1]
    return buf[:, n * kernel_stride:].clone(), torch.cat([compressed, emitted], dim=1)


@dataclass(frozen=True)
class CompressedKeyCache:
    """Decode-time compressed-key state of one InfLLM-V2 layer: C1 (``kernel_size`` / ``kernel_stride``) and
    C2 (``4 * kernel_size`` / ``4 * kernel_stride``), each a pending buffer plus the emitted compressed keys.

    Immutable: :meth:`append` returns the updated cache. ``c1`` / ``c2`` are what :func:`infllm_v2_attention`
    takes as ``compressed_k`` / ``compressed_k2`` for the keys appended so far.
    """

    pending1: torch.Tensor
    c1: torch.Tensor
    pending2: torch.Tensor
    c2: torch.Tensor
    kernel_size: int = 32
    kernel_stride: int = 16

    @classmethod
    def empty(cls, batch: int, heads: int, head_dim: int, *, kernel_size: int = 32, kernel_stride: int = 16,
              dtype: torch.dtype = torch.float32, device=None) -> CompressedKeyCache:
        z = torch.zeros((batch, 0, heads, head_dim), dtype=dtype, device=device)
        return cls(z, z, z, z, kernel_size, kernel_stride)

    @classmethod
    def from_keys(cls, k: torch.Tensor, *, kernel_size: int = 32, kernel_stride: int = 16) -> CompressedKeyCache:
        """The cache after a prefill of ``k`` ``[B, T, H, D]``."""
        b, _, h, d = k.shape
        return cls.empty(b, h, d, kernel_size=kernel_size, kernel_stride=kernel_stride, dtype=k.dtype,
                         device=k.device).append(k)

    def append(self, new_k: torch.Tensor) -> CompressedKeyCache:
        """The cache after ``new_k`` ``[B, n, H, D]`` more keys."""
        p1, c1 = update_compressed(self.pending1, self.c1, new_k, self.kernel_size, self.kernel_stride)
        p2, c2 = update_compressed(self.pending2, self.c2, new_k, C2_FACTOR * self.kernel_size,
                                   C2_FACTOR * self.kernel_stride)
        return CompressedKeyCache(p1, c1, p2, c2, self.kernel_size, self.kernel_stride)
