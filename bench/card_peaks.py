"""The card's reference rates, for the floors in docs/benchmarks.md: a dense bf16 GEMM (torch.matmul, 8192^3 and
16384^3) and a 512 MB bf16 copy (read + write), timed by ``triton.testing.do_bench``.

    python bench/card_peaks.py

Run in the same call as the kernel it is compared with (2026-11-29 on an H200, beside
``bench/lightning_sweep.py --rows 0``: GEMM 721 and 698 TFLOP/s, copy 4.16 TB/s).
"""

from __future__ import annotations

import torch
from triton.testing import do_bench


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/card_peaks.py needs a CUDA GPU")
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for n in (8192, 16384):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        ms = do_bench(lambda a=a, b=b: a @ b, rep=300)
        print(f"GEMM {n}^3 bf16: {ms:.3f} ms, {2 * n ** 3 / ms / 1e9:.0f} TFLOP/s")
    x = torch.empty(2 ** 28, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), rep=300)
    print(f"copy 512 MB: {2 * x.numel() * 2 / ms / 1e9:.2f} TB/s")


if __name__ == "__main__":
    main()
