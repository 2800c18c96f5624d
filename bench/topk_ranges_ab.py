"""InfLLM-V2 top-k: rows grouped by their number of candidate blocks (one launch per power-of-two tile width,
``_row_ranges`` in mixarch.kernels.triton.infllm_v2.select) against one launch whose tiles hold every block,
same process.

    python bench/topk_ranges_ab.py

The block scores of bench/infllm_v2.py's 128K and 32K prefill selection (B = 1, Hq = 32, Hkv = 2, D = 128, bf16,
SALA geometry, C2 normalizer, random normal inputs), taken from the selection itself; then the top-k launches
alone (do_bench medians), the two variants alternating three times, and whether their indices are equal.
"""

from __future__ import annotations

import torch
from infllm_v2_profile import SALA, _inputs  # bench/ (the script directory is on sys.path)
from timing import time_ms

import mixarch.kernels.triton.infllm_v2.select as sel
from mixarch.kernels.triton import pow2
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys


def _scores(t: int) -> tuple:
    """The arguments of the selection's ``topk_blocks`` call at ``t`` tokens (scores, out, t_k, block, ...)."""
    q, k, _ = _inputs(t, t)
    c1 = compress_keys(k, SALA["kernel_size"], SALA["kernel_stride"])
    c2 = compress_keys(k, C2_FACTOR * SALA["kernel_size"], C2_FACTOR * SALA["kernel_stride"])
    captured, topk_blocks = {}, sel.topk_blocks

    def grab(*args, **kw):
        captured["args"] = args
        return topk_blocks(*args, **kw)

    sel.topk_blocks = grab
    try:
        with torch.no_grad():
            sel._select(q, c1, c2, t, SALA["block_size"], SALA["kernel_size"], SALA["kernel_stride"],
                        SALA["init_blocks"], SALA["local_blocks"], SALA["topk"], 128 ** -0.5, False, direct=True)
    finally:
        sel.topk_blocks = topk_blocks
    return captured["args"]


def ab(t: int) -> None:
    scores, out, t_k, block, init, local = _scores(t)
    ranges = sel._row_ranges

    def one_launch(t_q, _t_k, _block, nb):
        return [(pow2(nb, 16), t_q)]

    idx, times = {}, {"by candidates": [], "one launch": []}
    for n in range(6):
        name = "by candidates" if n % 2 == 0 else "one launch"
        sel._row_ranges = ranges if n % 2 == 0 else one_launch
        try:
            def call():
                return sel.topk_blocks(scores, out, t_k, block, init, local, direct=True)

            idx.setdefault(name, call().clone())
            times[name].append(f"{time_ms(call, False):.2f}")
        finally:
            sel._row_ranges = ranges
    same = torch.equal(idx["by candidates"], idx["one launch"])
    print(f"top-k at {t // 1024}K, ms (indices equal: {same}; launches: {len(ranges(t, t, block, scores.shape[2]))})",
          flush=True)
    for name, ts in times.items():
        print(f"  {name}: {', '.join(ts)}", flush=True)


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in (131072, 32768):
        ab(t)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
