"""InfLLM-V2 stage 2: the gather kernels' key / value tiles by TMA (``TMA_GATHERS``) against per-thread loads, same
process.

    python bench/tma_ab.py

Stage 2 as the layer calls it (told the forced blocks: window tiles, then the free blocks gathered) at T = 128K
and 32K (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, the blocks of the real selection): do_bench
medians of the forward and of the backward, the two variants alternating three times, the CUDA time of the
gather kernels (``torch.profiler``), and whether o and dq are bit-identical between the variants.
"""

from __future__ import annotations

import torch
from infllm_v2_profile import SALA, _inputs, _kernel_times  # bench/ (the script directory is on sys.path)
from timing import time_ms

import mixarch.kernels.triton.infllm_v2.sparse as sp
from mixarch.ops.infllm_v2 import infllm_v2_attention


def ab(t: int) -> None:
    """Time and compare the two variants at ``t`` tokens."""
    q, k, v = _inputs(t, t)
    do = torch.randn_like(q)
    with torch.no_grad():
        _, idx = infllm_v2_attention(q, k, v, **SALA, dense_len=0, exact_normalizer=False, return_indices=True)
    geo = (SALA["block_size"], 128 ** -0.5, SALA["init_blocks"], SALA["local_blocks"])

    def fwd():
        return sp._sparse_fwd(q, k, v, idx, *geo, direct=True)

    results, times, kernels = {}, {}, {}
    for n in range(6):
        tma = n % 2 == 0
        sp.TMA_GATHERS = tma
        try:
            o, lse = fwd()

            def bwd(o=o, lse=lse):
                return sp._sparse_bwd(q, k, v, idx, o, lse, do, *geo, direct=True)

            results.setdefault(tma, (o, bwd()[0]))
            times.setdefault(tma, []).append(f"{time_ms(fwd, False):.2f} / {time_ms(bwd, False):.2f}")
            if n < 2:
                kt = {**_kernel_times(fwd), **_kernel_times(bwd)}
                kernels[tma] = ", ".join(f"{name} {ms:.2f}" for name, ms in kt.items()
                                         if name in ("_fwd_kernel", "_dq_kernel"))
        finally:
            sp.TMA_GATHERS = True
    same = all(torch.equal(a, b) for a, b in zip(results[True], results[False]))
    print(f"stage 2 at {t // 1024}K, forward / backward ms (o and dq bit-identical: {same}):", flush=True)
    for tma in (True, False):
        print(f"  {'TMA' if tma else 'pointer loads'}: {', '.join(times[tma])}; gathers (ms): {kernels[tma]}",
              flush=True)


def main() -> None:
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in (131072, 32768):
        ab(t)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
