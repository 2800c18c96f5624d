"""Lightning Gluon sweep variants against the committed kernel, same process, on a Hopper GPU: two warpgroups per
program over 128 state columns (``gluon_sweep.WIDE``, two or three pipeline stages) against one over 64, and the
issue orders of a chunk's matmuls (``gluon_sweep.ORDER``).

    python bench/lightning_wide_ab.py

First bit-identity on odd shapes (partial chunks and segments, packed sequences, fp16): o of the forward sweep
and dq, dk, dv of the backward's, every variant against the committed one. Then B = 1, 32 heads of 128, bf16, T = 128K and
32K: do_bench medians (``bench/timing.py``) of the sweep alone, the whole forward and the whole backward, the
variants alternating three times.
"""

from __future__ import annotations

import torch
import triton
from timing import time_ms  # bench/

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.kernels.triton.lightning import gluon_sweep as G
from mixarch.ops.lightning import alibi_slopes

H, D = 32, 128
#: (WIDE, WIDE_STAGES, ORDER); the first is the committed configuration
VARIANTS = [(False, 2, 0), (True, 2, 0), (True, 3, 0), (False, 2, 1), (False, 2, 2), (True, 2, 1), (True, 2, 2),
            (True, 3, 1)]


def _label(variant) -> str:
    return (f"wide/{variant[1]} stages" if variant[0] else "one warpgroup") + f"/order {variant[2]}"


def _set(variant) -> None:
    G.WIDE, G.WIDE_STAGES, G.ORDER = variant


def _gluon_ran() -> bool:
    """Whether the Gluon kernels ran since the last call: a variant that does not compile turns them off (after a
    warning) and the Triton kernels run instead, which would pass for a bit-identical, slower variant."""
    ran = G.ENABLED
    G.ENABLED = True
    return ran


def identity() -> None:
    """o, dq, dk, dv of every variant against the committed one, bit for bit, on short odd shapes."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    cases = [(2, 5 * C.CHUNK + 17, None, torch.bfloat16),
             (1, 0, [1, 0, 3 * C.CHUNK + 5, C.CHUNK, 127, 1], torch.float16),
             (1, 4096 + 33, None, torch.bfloat16)]
    for b, t, lengths, dtype in cases:
        cu = None
        if lengths is not None:
            t = sum(lengths)
            cu = torch.tensor([0] + lengths, device="cuda").cumsum(0).to(torch.int32)
        q, k, v, do = (torch.randn(b, t, 3, D, device="cuda", generator=gen).to(dtype) for _ in range(4))
        decay = alibi_slopes(3).cuda()
        runs = []
        for variant in VARIANTS:
            name = _label(variant)
            _set(variant)
            try:
                o, _, enter = C.chunk_fwd(q, k, v, decay, None, cu, 0.3, C.CHUNK, 2 * C.CHUNK, direct=True)
                grads = C.chunk_bwd(q, k, v, decay, enter, do, None, cu, 0.3, C.CHUNK, 2 * C.CHUNK, direct=True)
                runs.append((name, _gluon_ran(), o, *grads[:3]))
            except Exception as err:  # noqa: BLE001 - a variant that fails is reported, not fatal
                runs.append((name, f"failed: {type(err).__name__}: {str(err)[:160]}"))
            finally:
                _set(VARIANTS[0])
        label = f"B={b} T={t} {'varlen ' if cu is not None else ''}{str(dtype)[6:]}"
        for name, ran, *outs in runs[1:]:
            if ran is not True:
                print(f"{label} {name}: {ran or 'Gluon did not compile, the Triton kernels ran'}", flush=True)
                continue
            same = [torch.equal(x, y) for x, y in zip(outs, runs[0][2:])]
            print(f"{label} {name}: o, dq, dk, dv bit-identical to the committed variant: {same}", flush=True)


def ab(t: int, gen: torch.Generator) -> None:
    decay, scale = alibi_slopes(H).cuda(), D ** -0.5
    q, k, v, do = (torch.randn(1, t, H, D, device="cuda", generator=gen).bfloat16() for _ in range(4))
    seg = C.segment_size(t, H, C.CHUNK)
    lay = C.make_layout(1, t, None, seg)

    def fwd():
        return C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, seg, direct=True)

    enter = fwd()[2]

    def bwd():
        return C.chunk_bwd(q, k, v, decay, enter, do, None, None, scale, C.CHUNK, seg, direct=True)

    times = {variant: [] for variant in VARIANTS}
    for _ in range(3):
        for variant in VARIANTS:
            _set(variant)
            try:
                got = (f"{time_ms(lambda: G.sweep(q, k, v, decay, enter, lay, scale), False):.3f} / "
                       f"{time_ms(fwd, False):.3f} / {time_ms(bwd, False):.3f}")
                times[variant].append(got if _gluon_ran() else "Gluon did not compile")
            except Exception as err:  # noqa: BLE001 - a variant that does not fit is reported, not fatal
                times[variant].append(f"failed: {type(err).__name__}: {str(err)[:120]}")
            finally:
                _set(VARIANTS[0])
    rows = "; ".join(f"{_label(variant)} {', '.join(got)}" for variant, got in times.items())
    print(f"T={t // 1024}K sweep / forward / backward ms: {rows}", flush=True)


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    G.MIN_TOKEN_HEADS = 0  # the identity shapes and 32K are short
    identity()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for t in (131072, 32768):
        ab(t, gen)


if __name__ == "__main__":
    main()
