"""Lightning segment-state pass: Gluon (``gluon_state``, several tile / stage / warp variants) against Triton's
``_segment_state``, same process, on a Hopper GPU.

    python bench/lightning_state_ab.py

B = 1, 32 heads of 128, bf16, T = 128K and 32K: do_bench medians (``bench/timing.py``) of the forward's pass (k, v)
and the backward's (q, do), whether each variant's states equal the Triton pass's bit for bit (else their
largest relative difference), then the whole forward and backward with the Gluon state pass on and off,
alternating three times.
"""

from __future__ import annotations

import torch
import triton
from timing import time_ms  # bench/

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.kernels.triton.lightning import gluon_state as S
from mixarch.kernels.triton.lightning import gluon_sweep as G
from mixarch.ops.lightning import alibi_slopes

H, D = 32, 128
#: (state columns per program, pipeline stages, warps); the first is the committed configuration
VARIANTS = [(128, 4, 8), (128, 3, 8), (128, 2, 8), (64, 3, 4), (64, 2, 4)]


def passes(t: int, gen: torch.Generator) -> None:
    decay, scale = alibi_slopes(H).cuda(), D ** -0.5
    q, k, v, do = (torch.randn(1, t, H, D, device="cuda", generator=gen).bfloat16() for _ in range(4))
    seg = C.segment_size(t, H, C.CHUNK)
    lay = C.make_layout(1, t, None, seg)

    def triton_pass(a, b, reverse):
        out = torch.empty(lay.n_slots, H, D, D, dtype=torch.float32, device="cuda")
        C._segment_state[C._grid(D, lay, H)](a, b, decay, out, None, None, t, lay.n_seg, scale, H=H, DA=D, DB=D,
                                             BA=D, TB=C.STATE_TILE, C=C.CHUNK, SEG=seg, REVERSE=reverse,
                                             VARLEN=False, IEEE=False, UNDERFLOW=C.UNDERFLOW_LOG2)
        return out

    committed = S.TILE, S.STAGES, S.WARPS
    for name, a, b, reverse in (("forward (k, v)", k, v, False), ("backward (q, do)", q, do, True)):
        want = triton_pass(a, b, reverse)
        row = [f"Triton {time_ms(lambda a=a, b=b, r=reverse: triton_pass(a, b, r), False):.3f}"]
        for tile, stages, warps in VARIANTS:
            S.TILE, S.STAGES, S.WARPS = tile, stages, warps
            try:
                got = S.segment_states(a, b, decay, lay, scale, reverse, C.UNDERFLOW_LOG2)
                same = "=" if torch.equal(got, want) else \
                    f"~{((got - want).abs().max() / want.abs().max()).item():.1e}"
                ms = time_ms(lambda a=a, b=b, r=reverse: S.segment_states(a, b, decay, lay, scale, r,
                                                                          C.UNDERFLOW_LOG2), False)
                row.append(f"Gluon {tile}/{stages}/{warps} {ms:.3f} ({same})")
            except Exception as err:  # noqa: BLE001 - a variant that does not fit is reported, not fatal
                row.append(f"Gluon {tile}/{stages}/{warps} failed: {type(err).__name__}: {str(err)[:120]}")
            finally:
                S.TILE, S.STAGES, S.WARPS = committed
        print(f"T={t // 1024}K {name} state pass, ms: " + "; ".join(row), flush=True)

    def fwd():
        return C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, seg, direct=True)

    enter = fwd()[2]

    def bwd():
        return C.chunk_bwd(q, k, v, decay, enter, do, None, None, scale, C.CHUNK, seg, direct=True)

    results, times = {}, {True: [], False: []}
    for n in range(6):
        on = n % 2 == 0
        S.ENABLED = on
        try:
            results.setdefault(on, (*fwd()[:2], *bwd()))
            times[on].append(f"{time_ms(fwd, False):.3f} / {time_ms(bwd, False):.3f}")
        finally:
            S.ENABLED = True
    same = [torch.equal(x, y) for x, y in zip(results[True], results[False])]
    print(f"T={t // 1024}K forward / backward ms (o, final, dq, dk, dv, dh0 bit-identical: {same}): "
          f"Gluon state pass {', '.join(times[True])}; Triton state pass {', '.join(times[False])}", flush=True)


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    G.MIN_TOKEN_HEADS = 0  # compare at 32K too
    for t in (131072, 32768):
        passes(t, gen)


if __name__ == "__main__":
    main()
