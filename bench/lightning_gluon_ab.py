"""Lightning forward: the chunk sweep in Gluon (``gluon_sweep.ENABLED``) against Triton's ``_chunk_fwd``, same
process, on a Hopper GPU.

    python bench/lightning_gluon_ab.py

B = 1, 32 heads of 128, bf16, T = 128K and 32K: do_bench medians (``bench/timing.py``) of the whole forward
(segment states, scan, sweep) and of the sweep alone, the two variants alternating three times, and whether o is
bit-identical between them; then the backward (dq, dk, dv sweeps in Gluon against the Triton kernels).
"""

from __future__ import annotations

import torch
import triton
from timing import time_ms  # bench/

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.kernels.triton.lightning import gluon_sweep as G
from mixarch.ops.lightning import alibi_slopes

H, D = 32, 128


def ab(t: int, gen: torch.Generator) -> None:
    """Time and compare the two sweeps at ``t`` tokens."""
    decay, scale = alibi_slopes(H).cuda(), D ** -0.5
    q, k, v = (torch.randn(1, t, H, D, device="cuda", generator=gen).bfloat16() for _ in range(3))
    seg = C.segment_size(t, H, C.CHUNK)
    lay = C.make_layout(1, t, None, seg)

    def fwd():
        return C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, seg, direct=True)

    enter = fwd()[2]

    def sweep_only(gluon: bool):
        if gluon:
            return G.sweep(q, k, v, decay, enter, lay, scale)
        o = torch.empty_like(v)
        C._chunk_fwd[C._grid(D, lay, H)](q, k, v, decay, enter, o, None, None, t, lay.n_seg, scale, H=H, DK=D,
                                         DV=D, BK=D, TV=C.STATE_TILE, C=C.CHUNK, SEG=seg, VARLEN=False,
                                         IEEE=False, IEEE_AV=False)
        return o

    outs, times = {}, {True: [], False: []}
    for n in range(6):
        gluon = n % 2 == 0
        G.ENABLED = gluon
        try:
            outs.setdefault(gluon, fwd()[0])
            times[gluon].append(f"{time_ms(fwd, False):.3f} / {time_ms(lambda g=gluon: sweep_only(g), False):.3f}")
        finally:
            G.ENABLED = True
    print(f"T={t // 1024}K, forward / sweep alone, ms (o bit-identical: {torch.equal(outs[True], outs[False])}): "
          f"Gluon sweep {', '.join(times[True])}; Triton sweep {', '.join(times[False])}", flush=True)

    do = torch.randn_like(v)

    def bwd():
        return C.chunk_bwd(q, k, v, decay, enter, do, None, None, scale, C.CHUNK, seg, direct=True)

    grads, btimes = {}, {True: [], False: []}
    for n in range(6):
        gluon = n % 2 == 0
        G.ENABLED = gluon
        try:
            grads.setdefault(gluon, bwd())
            btimes[gluon].append(f"{time_ms(bwd, False):.3f}")
        finally:
            G.ENABLED = True
    same = [torch.equal(a, b) for a, b in zip(grads[True][:3], grads[False][:3])]
    print(f"T={t // 1024}K, backward ms (dq, dk, dv bit-identical: {same}): Gluon sweeps {', '.join(btimes[True])}; "
          f"Triton {', '.join(btimes[False])}", flush=True)


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    G.MIN_TOKEN_HEADS = 0  # compare the kernels at 32K too (the forward takes the Gluon sweep from 64K x 32 heads)
    for t in (131072, 32768):
        ab(t, gen)


if __name__ == "__main__":
    main()
