"""The Lightning forward in one pass (``gluon_sweep.fused``) against the two passes, same process, on a Hopper GPU.

    python bench/lightning_fused_ab.py [--subs 256 512 1024] [--lengths 131072 32768]

Variants: the two-pass forward (Gluon state pass, scan, Gluon sweep) with one warpgroup per program and with two
(``gluon_sweep.WIDE``), and the one-pass forward with sub-segments of each ``--subs`` size (``gluon_sweep.SUB``),
with two warpgroups per program and with one.
First correctness on odd shapes (partial chunks and sub-segments, B = 2, initial states, fp16): o, the final
state and the entering states of every one-pass variant against the two-pass forward (relative RMSE; the states
are summed in another order, so not bit for bit), and o against the fp64 reference. Then B = 1, 32 heads of 128,
bf16 at each length: the relative RMSE of o and the final state against the two passes, and do_bench medians
(``bench/timing.py``) of the forward, the variants alternating three times.
"""

from __future__ import annotations

import argparse

import torch
import triton
from timing import time_ms  # bench/

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.kernels.triton.lightning import gluon_sweep as G
from mixarch.ops.lightning import alibi_slopes, naive_lightning_attention
from mixarch.testing.compare import rel_rmse

H, D = 32, 128


def _variants(subs: list[int]) -> list[tuple[str, dict]]:
    two = [("two passes, one warpgroup", dict(WIDE=False, FUSED=False)), ("two passes, wide", dict(FUSED=False))]
    return two + [(f"one pass, {'wide' if wide else 'one warpgroup'}, {sub}-token sub-segments",
                   dict(FUSED=True, SUB=sub, WIDE=wide)) for sub in subs for wide in (True, False)]


def _run(settings: dict, fn):
    """``fn()`` with the module settings ``settings`` (restored after); raises if Gluon did not run."""
    saved = {key: getattr(G, key) for key in ("WIDE", "FUSED", "SUB")}
    try:
        for key, value in {**saved, "WIDE": True, **settings}.items():
            setattr(G, key, value)
        out = fn()
        if not G.ENABLED:  # a kernel that does not compile turns Gluon off, after a warning
            G.ENABLED = True
            raise RuntimeError("Gluon did not compile: the Triton kernels ran")
        return out
    finally:
        for key, value in saved.items():
            setattr(G, key, value)


def correctness(variants) -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    for b, t, dtype in ((2, 5 * C.CHUNK + 17, torch.bfloat16), (1, 4096 + 33, torch.float16),
                        (2, 3000, torch.bfloat16)):
        q, k, v = (torch.randn(b, t, 3, D, device="cuda", generator=gen).to(dtype) for _ in range(3))
        h0 = torch.randn(b, 3, D, D, device="cuda", generator=gen)
        decay = alibi_slopes(3).cuda()
        seg = 16 * C.CHUNK  # sub-segments of 512 and more are cut to the segment

        def fwd():
            return C.chunk_fwd(q, k, v, decay, h0, None, 0.3, C.CHUNK, seg, direct=True)

        want = _run(variants[1][1], fwd)
        ro = naive_lightning_attention(q.double(), k.double(), v.double(), decay, scale=0.3,
                                       initial_state=h0.double())[0]
        for name, settings in variants[2:]:
            try:
                got = _run(settings, fwd)
                errs = [rel_rmse(w.double(), g.double()) for w, g in zip(want, got)]
                print(f"B={b} T={t} {str(dtype)[6:]} {name}: rel. RMSE against the two passes o / final / entering "
                      f"{errs[0]:.2e} / {errs[1]:.2e} / {errs[2]:.2e}; o against fp64 {rel_rmse(ro, got[0].double()):.2e}"
                      f" (two passes: {rel_rmse(ro, want[0].double()):.2e})", flush=True)
            except Exception as err:  # noqa: BLE001 - a variant that fails is reported, not fatal
                print(f"B={b} T={t} {name}: failed: {type(err).__name__}: {str(err)[:200]}", flush=True)


def ab(t: int, variants, gen: torch.Generator) -> None:
    decay, scale = alibi_slopes(H).cuda(), D ** -0.5
    q, k, v = (torch.randn(1, t, H, D, device="cuda", generator=gen).bfloat16() for _ in range(3))
    seg = C.segment_size(t, H, C.CHUNK)

    def fwd():
        return C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, seg, direct=True)

    want = _run(variants[1][1], fwd)
    times = {name: [] for name, _ in variants}
    for name, settings in variants[2:]:
        try:
            got = _run(settings, fwd)
            print(f"T={t // 1024}K {name}: rel. RMSE against the two passes o {rel_rmse(want[0].double(), got[0].double()):.2e}, "
                  f"final state {rel_rmse(want[1].double(), got[1].double()):.2e}", flush=True)
        except Exception as err:  # noqa: BLE001
            print(f"T={t // 1024}K {name}: failed: {type(err).__name__}: {str(err)[:200]}", flush=True)
    for _ in range(3):
        for name, settings in variants:
            try:
                times[name].append(f"{_run(settings, lambda: time_ms(fwd, False)):.3f}")
            except Exception as err:  # noqa: BLE001
                times[name].append(f"failed: {type(err).__name__}: {str(err)[:120]}")
    rows = "; ".join(f"{name} {', '.join(got)}" for name, got in times.items())
    print(f"T={t // 1024}K forward ms: {rows}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072, 32768])
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    G.MIN_TOKEN_HEADS = 0  # the correctness shapes are short
    variants = _variants(args.subs)
    correctness(variants)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for t in args.lengths:
        ab(t, variants, gen)


if __name__ == "__main__":
    main()
