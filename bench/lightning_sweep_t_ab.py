"""Lightning forward sweep: the transposed-state Gluon kernel (``gluon_sweep_t``) against the Gluon sweep
(``gluon_sweep``), same process, on a Hopper GPU.

    python bench/lightning_sweep_t_ab.py

First odd shapes (partial chunks and segments, a batch, packed sequences with empty and length-1 ones, bf16 and
fp16): whether o equals the Gluon sweep's bit for bit, else their relative RMSE. Then B = 1, 32 heads of 128,
bf16, T = 128K and 32K: do_bench medians (``bench/timing.py``) of the two sweeps alone, alternating three times.
"""

from __future__ import annotations

import torch
import triton
from timing import time_ms  # bench/

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.kernels.triton.lightning import gluon_sweep as G
from mixarch.kernels.triton.lightning import gluon_sweep_t as GT
from mixarch.ops.lightning import alibi_slopes
from mixarch.testing.compare import rel_rmse
from mixarch.testing.strategies import cu_seqlens_from


def compare(b: int, t: int, h: int, lengths, dtype, seg: int, gen: torch.Generator) -> str:
    decay, scale = (alibi_slopes(h) * 0.5).cuda(), 0.3
    q, k, v = (torch.randn(b, t, h, 128, device="cuda", generator=gen).to(dtype) for _ in range(3))
    cu = None if lengths is None else cu_seqlens_from(lengths).cuda()
    n = b if cu is None else len(lengths)
    h0 = torch.randn(n, h, 128, 128, device="cuda", generator=gen)
    lay = C.make_layout(b, t, cu, seg)
    _, _, enter = C.chunk_fwd(q, k, v, decay, h0, cu, scale, C.CHUNK, seg, direct=True)
    want = G.sweep(q, k, v, decay, enter, lay, scale)
    got = GT.sweep(q, k, v, decay, enter, lay, scale)
    if cu is not None:  # rows of no sequence are left unwritten by both
        used = torch.zeros(t, dtype=torch.bool, device="cuda")
        used[: int(cu[-1])] = True
        want, got = want[:, used], got[:, used]
    if torch.equal(got, want):
        return "bit-identical"
    return f"rel RMSE {rel_rmse(want.double(), got.double()):.2e}, finite {bool(torch.isfinite(got).all())}"


def speed(t: int, gen: torch.Generator) -> None:
    h = 32
    decay, scale = alibi_slopes(h).cuda(), 128 ** -0.5
    q, k, v = (torch.randn(1, t, h, 128, device="cuda", generator=gen).bfloat16() for _ in range(3))
    seg = C.segment_size(t, h, C.CHUNK)
    lay = C.make_layout(1, t, None, seg)
    enter = C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, seg, direct=True)[2]
    same = torch.equal(G.sweep(q, k, v, decay, enter, lay, scale), GT.sweep(q, k, v, decay, enter, lay, scale))
    times = {"gluon": [], "transposed": []}
    for _ in range(3):
        times["gluon"].append(f"{time_ms(lambda: G.sweep(q, k, v, decay, enter, lay, scale), False):.3f}")
        times["transposed"].append(f"{time_ms(lambda: GT.sweep(q, k, v, decay, enter, lay, scale), False):.3f}")
    print(f"T={t // 1024}K sweep alone, ms (o bit-identical: {same}): Gluon sweep {', '.join(times['gluon'])}; "
          f"transposed state {', '.join(times['transposed'])}", flush=True)


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    G.MIN_TOKEN_HEADS = 0
    lengths = [1, 0, 3 * 64 + 5, 64, 2 * 64 - 1, 1]
    for dtype in (torch.bfloat16, torch.float16):
        for b, t, h, lens, seg in ((2, 5 * 64 + 17, 3, None, 128), (1, sum(lengths), 3, lengths, 128),
                                   (1, 4096, 4, None, 1024)):
            print(f"{dtype} B={b} T={t} H={h} lengths={lens}: {compare(b, t, h, lens, dtype, seg, gen)}", flush=True)
    for t in (131072, 32768):
        speed(t, gen)


if __name__ == "__main__":
    main()
