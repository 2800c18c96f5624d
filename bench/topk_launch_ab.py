"""InfLLM-V2 prefill top-k: launch configurations of ``_topk_kernel`` (rows per program, warps), same process.

    python bench/topk_launch_ab.py [--lengths 131072 32768]

The block scores of bench/infllm_v2.py's 128K and 32K prefill selection (B = 1, Hq = 32, Hkv = 2, D = 128, bf16,
SALA geometry, C2 normalizer, random normal inputs), taken from the selection itself (bench/topk_ranges_ab.py);
then the top-k launches alone (do_bench medians, L2 flushed) under each ``TOPK_LAUNCH["prefill"]`` of
``VARIANTS`` ("row/W, E": tiles of E scores, a warp per W of a row's candidates), alternating twice, and whether
their indices equal the first variant's.
"""

from __future__ import annotations

import argparse

import torch
import triton
from timing import time_ms
from topk_ranges_ab import _scores  # bench/ (the script directory is on sys.path)

import mixarch.kernels.triton.infllm_v2.select as sel

#: name -> TOPK_LAUNCH["prefill"]; the first is the committed one
VARIANTS = {
    "committed": dict(sel.TOPK_LAUNCH["prefill"]),
    "tiles of 4096": {"elems": 4096, "per_warp": 512, "min_warps": 4, "row_warps": False},  # before 2026-11-29
    "1 row, 1 warp": {"elems": 2048, "per_warp": 2048, "min_warps": 1, "row_warps": False},
    "1 row, 4 warps": {"elems": 2048, "per_warp": 512, "min_warps": 1, "row_warps": False},
    "row/512, 2048": {"elems": 2048, "per_warp": 512, "min_warps": 1, "row_warps": True},
    "row/1024, 2048": {"elems": 2048, "per_warp": 1024, "min_warps": 1, "row_warps": True},
    "row/512, 4096": {"elems": 4096, "per_warp": 512, "min_warps": 1, "row_warps": True},
    "row/256, 2048": {"elems": 2048, "per_warp": 256, "min_warps": 1, "row_warps": True},
    "row/512, 1024": {"elems": 1024, "per_warp": 512, "min_warps": 1, "row_warps": True},
    "row/512, 256": {"elems": 256, "per_warp": 512, "min_warps": 1, "row_warps": True},
    "row/1024, 1024": {"elems": 1024, "per_warp": 1024, "min_warps": 1, "row_warps": True},
}


def ab(t: int) -> None:
    scores, out, t_k, block, init, local = _scores(t)
    committed = dict(sel.TOPK_LAUNCH["prefill"])
    idx, times = {}, {name: [] for name in VARIANTS}
    for _ in range(2):
        for name, cfg in VARIANTS.items():
            sel.TOPK_LAUNCH["prefill"] = cfg
            try:
                def call():
                    return sel.topk_blocks(scores, out, t_k, block, init, local, direct=True)

                idx.setdefault(name, call().clone())
                times[name].append(time_ms(call, False))
            finally:
                sel.TOPK_LAUNCH["prefill"] = committed
    first = idx[next(iter(VARIANTS))]
    print(f"prefill top-k at {t // 1024}K, ms", flush=True)
    for name, ts in times.items():
        print(f"  {name:16s} {', '.join(f'{x:.2f}' for x in ts)}  (indices equal: {torch.equal(idx[name], first)})",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072, 32768], help="prefill lengths T")
    lengths = parser.parse_args().lengths
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, Triton {triton.__version__}", flush=True)
    for t in lengths:
        ab(t)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
