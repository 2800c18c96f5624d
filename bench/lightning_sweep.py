"""Launch-configuration sweep of the Lightning Triton kernels on one CUDA GPU: state tile width, chunk length, warps
and stages of the chunk kernels and of ``_segment_state``, segment length. Each variant is checked first (bf16, T=4K, relative
RMSE of o, dq, dk, dv against the fp32 torch reference) and then timed at T (default 128K; B=1, 32 heads of 128):
forward, its segment-state pass, backward. Prints registers / spills of the compiled chunk kernels.

    python bench/lightning_sweep.py                    # the variants of docs/benchmarks.md
    python bench/lightning_sweep.py --t 65536

The module constants are patched per variant and the autotuners' caches cleared, so variants do not mix.
"""

from __future__ import annotations

import argparse
import time

import torch
import triton
from timing import time_ms  # bench/timing.py (scripts run from bench/)

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.ops.lightning import alibi_slopes, reference_lightning_attention
from mixarch.testing.compare import rel_rmse

H, D = 32, 128
KERNELS = ("_segment_state", "_chunk_fwd", "_chunk_bwd_dq", "_chunk_bwd_dk", "_chunk_bwd_dv")
# (state tile, chunk warps, chunk stages, _segment_state warps, its stages, segment or None for the default,
#  chunk length[, register cap of the chunk kernels (Triton's ``maxnreg``)])
VARIANTS = [(64, 4, 2, 8, 2, None, 64),  # the committed configuration
            (64, 8, 3, 8, 2, None, 64), (128, 8, 2, 8, 2, None, 64), (64, 4, 3, 8, 2, None, 64),
            # narrower state slices (more CTAs per SM, q k^T recomputed per slice), a shorter segment
            (32, 4, 2, 8, 2, None, 64), (32, 2, 2, 8, 2, None, 64), (64, 4, 2, 8, 2, 1024, 64),
            # other chunk lengths: 32 (less intra-chunk work, smaller dots), 128 (larger dots, more work)
            (64, 4, 2, 8, 2, None, 32), (128, 8, 2, 8, 2, None, 32), (64, 8, 2, 8, 2, None, 128),
            # three programs per multiprocessor: 1 stage (57 KB of shared memory) and at most 168 registers
            (64, 4, 1, 8, 2, None, 64), (64, 4, 1, 8, 2, None, 64, 168), (64, 4, 2, 8, 2, None, 64, 168)]


def configure(tile: int, warps: int, stages: int, seg_warps: int, seg_stages: int, chunk: int,
              maxnreg: int | None = None) -> None:
    C.STATE_TILE, C.CHUNK = tile, chunk
    for name in KERNELS:
        tuner = getattr(C, name)
        if name == "_segment_state":
            tuner.configs = [triton.Config({}, num_warps=seg_warps, num_stages=seg_stages)]
        else:
            tuner.configs = [triton.Config({}, num_warps=warps, num_stages=stages, maxnreg=maxnreg)]
        tuner.cache.clear()


def fwd_bwd(q, k, v, do, decay, segment: int):
    scale = q.shape[-1] ** -0.5
    o, _, enter = C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, segment, direct=True)
    dq, dk, dv, _ = C.chunk_bwd(q, k, v, decay, enter, do, None, None, scale, C.CHUNK, segment, direct=True)
    return o, dq, dk, dv


def timings(q, k, v, do, decay, segment: int) -> tuple[float, float, float]:
    """Median ms of the forward, of its segment-state pass alone, and of the backward."""
    t, scale = q.shape[1], q.shape[-1] ** -0.5
    layout = C.make_layout(1, t, None, segment)
    fwd = time_ms(lambda: C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, segment, direct=True), quick=False)
    states = time_ms(lambda: C._states(layout, k, v, decay, None, scale, C.CHUNK, False, direct=True), quick=False)
    enter = C.chunk_fwd(q, k, v, decay, None, None, scale, C.CHUNK, segment, direct=True)[2]
    bwd = time_ms(lambda: C.chunk_bwd(q, k, v, decay, enter, do, None, None, scale, C.CHUNK, segment, direct=True), quick=False)
    return fwd, states, bwd


def registers(warps: int) -> str:
    out = []
    try:
        for name in KERNELS[1:]:
            for caches in getattr(C, name).fn.device_caches.values():
                out += [f"{name[1:]} {k.n_regs}/{k.n_spills}" for k in caches[0].values()
                        if k.metadata.num_warps == warps]
    except (AttributeError, IndexError, TypeError) as err:  # Triton's compiled-kernel cache is internal API
        return f"n/a ({type(err).__name__})"
    return ", ".join(sorted(set(out)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t", type=int, default=131072, help="timed sequence length (default 128K)")
    parser.add_argument("--rows", type=int, nargs="*", help="run only these rows of VARIANTS (0 = committed)")
    args = parser.parse_args()
    if args.rows and not all(0 <= r < len(VARIANTS) for r in args.rows):
        parser.error(f"--rows: expected row numbers from 0 to {len(VARIANTS) - 1}")
    if not torch.cuda.is_available():
        raise SystemExit("bench/lightning_sweep.py needs a CUDA GPU")
    gen = torch.Generator(device="cuda").manual_seed(0)
    decay = alibi_slopes(H).cuda()
    small = [torch.randn(1, 4096, H, D, device="cuda", generator=gen).bfloat16() for _ in range(4)]
    leaves = [x.float().requires_grad_() for x in small[:3]]
    ref_o = reference_lightning_attention(*leaves, decay)[0]
    ref = [ref_o, *torch.autograd.grad(ref_o, leaves, small[3].float())]
    big = [torch.randn(1, args.t, H, D, device="cuda", generator=gen).bfloat16() for _ in range(4)]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; T={args.t}; "
          f"the committed configuration is 64 wide, chunk 64, 4 x 2 / 8 x 2 (the first row)")
    print("| state tile | chunk | warps x stages (chunk / segment state) | register cap | segment | fwd ms | "
          "segment states ms | bwd ms | fwd+bwd ms | rel. RMSE o, dq, dk, dv | registers/spills |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in args.rows or range(len(VARIANTS)):
        tile, warps, stages, seg_warps, seg_stages, segment, chunk, *cap = VARIANTS[row]
        maxnreg = cap[0] if cap else None
        start = time.time()
        try:
            configure(tile, warps, stages, seg_warps, seg_stages, chunk, maxnreg)
            errs = [rel_rmse(r, x.float()) for r, x in zip(ref, fwd_bwd(*small, decay, C.segment_size(4096, H, chunk)))]
            seg = segment or C.segment_size(args.t, H, chunk)
            fwd, states, bwd = timings(*big, decay, seg)
            print(f"| [128, {tile}] | {chunk} | {warps} x {stages} / {seg_warps} x {seg_stages} | {maxnreg or '-'} | "
                  f"{seg} | {fwd:.3f} | "
                  f"{states:.3f} | {bwd:.3f} | {fwd + bwd:.3f} | {', '.join(f'{e:.1e}' for e in errs)} | "
                  f"{registers(warps)} |", flush=True)
        except Exception as err:  # one variant failing to compile or run must not end the sweep
            print(f"| [128, {tile}] | {chunk} | {warps} x {stages} / {seg_warps} x {seg_stages} | {maxnreg or '-'} | "
                  f"{segment} | failed: {type(err).__name__}: {str(err).splitlines()[0][:120]} | | | | | |", flush=True)
        finally:
            torch.cuda.empty_cache()
        print(f"  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
