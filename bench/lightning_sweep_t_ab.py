"""Lightning sweeps: the transposed-state Gluon kernel (``gluon_sweep_t``, both issue orders) against the Gluon
sweep (``gluon_sweep``), forward and backward, same process, on a Hopper GPU.

    python bench/lightning_sweep_t_ab.py

First odd shapes (partial chunks and segments, a batch, packed sequences with empty and length-1 ones, bf16 and
fp16): whether o, dq, dk, dv equal the Gluon sweeps' bit for bit, and their relative RMSE. Then B = 1, 32 heads
of 128, bf16, T = 128K and 32K: do_bench medians (``bench/timing.py``) of the forward sweep alone and of the
backward, the variants alternating three times.
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
    """Forward o and backward dq, dk, dv of the transposed sweeps (both issue orders) against the Gluon sweeps."""
    decay, scale = (alibi_slopes(h) * 0.5).cuda(), 0.3
    q, k, v, do = (torch.randn(b, t, h, 128, device="cuda", generator=gen).to(dtype) for _ in range(4))
    cu = None if lengths is None else cu_seqlens_from(lengths).cuda()
    n = b if cu is None else len(lengths)
    h0 = torch.randn(n, h, 128, 128, device="cuda", generator=gen)
    used = torch.ones(t, dtype=torch.bool, device="cuda") if cu is None else \
        torch.arange(t, device="cuda") < int(cu[-1])  # rows of no sequence are left unwritten

    def run():
        o, _, enter = C.chunk_fwd(q, k, v, decay, h0, cu, scale, C.CHUNK, seg, direct=True)
        return [x[:, used] for x in (o, *C.chunk_bwd(q, k, v, decay, enter, do, None, cu, scale, C.CHUNK, seg,
                                                      direct=True)[:3])]

    want = run()
    verdicts = []
    for x_first in (False, True):
        G.TRANSPOSED, GT.X_FIRST = True, x_first
        try:
            got = run()
        finally:
            G.TRANSPOSED, GT.X_FIRST = False, False
        same = [torch.equal(a, b) for a, b in zip(got, want)]
        worst = max(rel_rmse(b.double(), a.double()) for a, b in zip(got, want))
        verdicts.append(f"X_FIRST={x_first}: o, dq, dk, dv bit-identical {same} (worst rel RMSE {worst:.1e})")
    return "; ".join(verdicts)


def speed(t: int, gen: torch.Generator) -> None:
    h = 32
    decay, scale = alibi_slopes(h).cuda(), 128 ** -0.5
    q, k, v, do = (torch.randn(1, t, h, 128, device="cuda", generator=gen).bfloat16() for _ in range(4))
    seg = C.segment_size(t, h, C.CHUNK)
    lay = C.make_layout(1, t, None, seg)
    enter = C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, seg, direct=True)[2]

    def bwd():
        return C.chunk_bwd(q, k, v, decay, enter, do, None, None, scale, C.CHUNK, seg, direct=True)

    variants = {"Gluon sweep": (False, False), "transposed": (True, False), "transposed, X first": (True, True)}
    times = {name: [] for name in variants}
    for _ in range(3):
        for name, (transposed, x_first) in variants.items():
            G.TRANSPOSED, GT.X_FIRST = transposed, x_first
            try:
                fwd = time_ms(lambda: G.sweep(q, k, v, decay, enter, lay, scale), False)
                times[name].append(f"{fwd:.3f} / {time_ms(bwd, False):.3f}")
            finally:
                G.TRANSPOSED, GT.X_FIRST = False, False
    print(f"T={t // 1024}K forward sweep alone / backward, ms: "
          + "; ".join(f"{name} {', '.join(ts)}" for name, ts in times.items()), flush=True)


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
