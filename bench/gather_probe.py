"""What bounds InfLLM-V2 stage 2's gather kernel: the forward at 128K and 32K on the real selection, on synthetic
selections whose free blocks come from a small working set, and on the real selection shared by all 64 queries of
a block (same process; stage 2 forward times and CUDA time per kernel).

    python bench/gather_probe.py                 # the table
    ncu --set full -k regex:'^_fwd_kernel$' --launch-count 1 python bench/gather_probe.py --once 32768

The synthetic rows keep the init block and the local window and draw their 62 free blocks uniformly without
replacement from blocks ``1 .. ws`` (rows with fewer candidates keep the real selection): with ``ws`` = 128 the
free blocks of all queries of a KV head fit in 8 MB, far inside the L2, so a kernel bound by HBM traffic would
speed up there. ``--once T`` runs the selection and two stage-2 forwards at ``T`` and exits (for profilers).
"""

from __future__ import annotations

import sys

import torch
from infllm_v2_profile import STAGE2, _kernel_times, _prefill_case  # bench/ (on sys.path)
from timing import time_ms

import mixarch.kernels.triton.infllm_v2.sparse as sp


def synthetic(idx: torch.Tensor, t: int, ws: int, gen: torch.Generator) -> torch.Tensor:
    """Selection rows ``[1, 2, t, 96]``: block 0, 62 distinct free blocks from ``1 .. ws``, the 33 local blocks."""
    bt = torch.arange(t, device="cuda") // 64
    w_lo = (bt - 32).clamp(min=0)
    j = torch.arange(ws, device="cuda") + 1
    r = torch.rand(2, t, ws, generator=gen, device="cuda")
    r = torch.where(j[None, None, :] < w_lo[None, :, None], r, -1.0)
    free = (r.topk(62, dim=-1).indices + 1).sort(-1).values
    row = torch.cat([torch.zeros(2, t, 1, dtype=torch.long, device="cuda"), free,
                     (w_lo[:, None] + torch.arange(33, device="cuda"))[None].expand(2, -1, -1)], -1)
    ok = (torch.minimum(w_lo, torch.full_like(w_lo, ws + 1)) - 1 >= 62)[None, :, None]
    return torch.where(ok, row, idx[0])[None].contiguous()


def probe(t: int) -> None:
    q, k, v, idx = _prefill_case(t)
    gen = torch.Generator(device="cuda").manual_seed(1)
    variants = {"real selection": idx}
    for ws in (2048, 1024, 512, 256, 128):
        if ws * 64 <= t:
            variants[f"uniform over {ws} blocks"] = synthetic(idx, t, ws, gen)
    shared = idx.view(1, 2, t // 64, 64, -1)[:, :, :, :1].expand(-1, -1, -1, 64, -1).reshape_as(idx).contiguous()
    variants["real, shared per 64 queries"] = shared
    for rnd in range(2):
        for name, ix in variants.items():
            def fn(ix=ix):
                return sp._sparse_fwd(q, k, v, ix, *STAGE2, direct=True)

            ms = time_ms(fn, False)
            kernels = _kernel_times(fn) if rnd == 0 else {}
            per_kernel = ", ".join(f"{n} {x:.2f}" for n, x in kernels.items() if x > 0.3)
            print(f"T={t // 1024}K {name:>28}: stage 2 forward {ms:.2f} ms  {per_kernel}", flush=True)


def main() -> None:
    if "--once" in sys.argv:
        q, k, v, idx = _prefill_case(int(sys.argv[sys.argv.index("--once") + 1]))
        for _ in range(2):
            sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)
        torch.cuda.synchronize()
        return
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in (131072, 32768):
        probe(t)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
