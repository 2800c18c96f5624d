"""Decode-shaped SDPA at successive key lengths: why ``mixarch.ops.softmax`` keeps cuDNN out of decode.

One query (16 heads, GQA over 2 KV heads of 128, bf16) against 128K keys and a few more, one call per new key
length, wall time with a device sync around each call (host work such as building a cuDNN execution graph
included). Rows: torch's default backend choice at new lengths, the same lengths again (cached), the other
backends at new lengths, and cuDNN alone and flash alone at new lengths.

    python bench/sdpa_decode.py              # on an H100 / H200; milliseconds per call, 8 lengths per row
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

START = 131072


def per_call_ms(q: torch.Tensor, kv: torch.Tensor, first: int, backends) -> list[float]:
    """Milliseconds of one SDPA call at each key length ``first .. first + 7`` (``backends``: a context)."""
    out = []
    for t in range(first, first + 8):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with backends():
            F.scaled_dot_product_attention(q, kv[:, :, :t], kv[:, :, :t], enable_gqa=True)
        torch.cuda.synchronize()
        out.append(round((time.perf_counter() - start) * 1e3, 2))
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/sdpa_decode.py needs a CUDA device")
        return 2
    q = torch.randn(1, 16, 1, 128, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, 2, START + 1024, 128, device="cuda", dtype=torch.bfloat16)
    rows = [("default, new lengths", START, contextlib.nullcontext),
            ("default, same lengths again", START, contextlib.nullcontext),
            ("flash/efficient/math, new lengths", START + 28,
             lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])),
            ("cuDNN only, new lengths", START + 128, lambda: sdpa_kernel([SDPBackend.CUDNN_ATTENTION])),
            ("flash only, new lengths", START + 128, lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION]))]
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; ms per call at 8 successive key lengths")
    for label, first, backends in rows:
        try:
            print(f"{label:36s} {per_call_ms(q, kv, first, backends)}", flush=True)
        except RuntimeError as err:  # a backend that cannot run this shape
            print(f"{label:36s} fails: {str(err).splitlines()[0][:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
