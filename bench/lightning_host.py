"""Where a small Lightning forward + backward spends its time: GPU work against host work. The diagnostics behind
the "host-bound below 32K" paragraph of docs/benchmarks.md.

    python bench/lightning_host.py                         # on a CUDA GPU: B=1, 32 heads of 128, bf16, T = 4K, 16K
    TRITON_INTERPRET=1 python bench/lightning_host.py --cpu   # anywhere: Python time with the launches mocked
    python bench/lightning_host.py --gluon                 # on a Hopper GPU: the Gluon kernels' host time, profiled

GPU mode:
1. GPU time of one forward + backward with every launch already queued: a long ``torch.cuda._sleep`` kernel runs
   first, so the host issues the whole call before the GPU reaches it; CUDA events around the call then time the
   GPU alone. Next to it, the host time of issuing the call.
2. Host time of ``chunk_fwd`` + ``chunk_bwd`` (the kernels alone, no autograd) through ``wrap_triton`` and with
   direct launches (what eager calls do), launches queued as in 1.
CPU mode: microseconds of Python per public-op forward + backward (``lightning_attention`` then
``torch.autograd.grad``) with every kernel launch replaced by a no-op, over 200 calls.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import mixarch.kernels.triton.lightning.chunk as chunk
from mixarch.kernels.triton import interpreting
from mixarch.kernels.triton.lightning import op
from mixarch.ops.lightning import alibi_slopes

H, D = 32, 128


def _case(t: int, device: str):
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (torch.randn(1, t, H, D, device=device, dtype=dtype, generator=gen) for _ in range(3))
    decay = alibi_slopes(H).to(device)
    do = torch.randn_like(q)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def train():
        o = op.lightning_attention(*leaves, decay)[0]
        return torch.autograd.grad(o, leaves, do)

    def kernels(direct: bool):
        seg = chunk.segment_size(t, H)
        _, _, enter = chunk.chunk_fwd(q, k, v, decay, None, None, D ** -0.5, chunk.CHUNK, seg, direct=direct)
        return chunk.chunk_bwd(q, k, v, decay, enter, do, None, None, D ** -0.5, chunk.CHUNK, seg, direct=direct)

    return train, kernels


def _queued(fn, reps: int = 10) -> tuple[float, float]:
    """(GPU ms, host ms) per call with every launch queued behind a sleeping kernel."""
    fn(), fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(500_000_000)
    start.record()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t0) * 1e3 / reps
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps, host


def gpu() -> None:
    props = torch.cuda.get_device_properties(0)
    print(f"card: {props.name}, torch {torch.__version__}", flush=True)
    for t in (4096, 16384):
        train, kernels = _case(t, "cuda")
        gpu_ms, host_ms = _queued(train)
        print(f"T={t}: forward + backward, GPU {gpu_ms:.3f} ms with launches queued, host {host_ms:.3f} ms",
              flush=True)
        for direct in (False, True):
            _, host_ms = _queued(functools.partial(kernels, direct))
            how = "direct launches" if direct else "through wrap_triton"
            print(f"  chunk_fwd + chunk_bwd, {how}: host {host_ms * 1e3:.0f} us", flush=True)


def gluon_host() -> None:
    """Host time of an eager forward + backward's kernels at 4K with the Gluon kernels (threshold lifted) and
    without, queued as in ``gpu``; then where the Gluon path's host time goes (cProfile, top 25 by own time)."""
    import cProfile
    import pstats

    from mixarch.kernels.triton.lightning import gluon_sweep

    _, kernels = _case(4096, "cuda")
    run = functools.partial(kernels, True)
    saved = gluon_sweep.MIN_TOKEN_HEADS
    for label, threshold in (("Gluon kernels", 0), ("Triton kernels", saved), ("Gluon kernels", 0)):
        gluon_sweep.MIN_TOKEN_HEADS = threshold
        gpu_ms, host_ms = _queued(run, reps=50)
        print(f"T=4096 chunk_fwd + chunk_bwd, {label}: host {host_ms * 1e3:.0f} us, GPU {gpu_ms * 1e3:.0f} us",
              flush=True)
    gluon_sweep.MIN_TOKEN_HEADS = 0
    torch.cuda._sleep(2_000_000_000)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(50):
        run()
    profile.disable()
    torch.cuda.synchronize()
    gluon_sweep.MIN_TOKEN_HEADS = saved
    pstats.Stats(profile).sort_stats("tottime").print_stats(25)


def cpu_mocked() -> None:
    class _NoLaunch:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    chunk.launcher = lambda kernel, direct: _NoLaunch()
    train, _ = _case(4096, "cpu")
    for _ in range(5):
        train()
    t0 = time.perf_counter()
    for _ in range(200):
        train()
    print(f"Python per forward + backward at 4K, launches mocked: {(time.perf_counter() - t0) / 200 * 1e6:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="Python time with mocked launches (TRITON_INTERPRET=1)")
    parser.add_argument("--gluon", action="store_true", help="host time of the Gluon kernels' launches, profiled")
    args = parser.parse_args()
    if args.gluon:
        gluon_host()
    elif args.cpu:
        if not interpreting():
            raise SystemExit("--cpu needs TRITON_INTERPRET=1 set before Python starts")
        cpu_mocked()
    elif torch.cuda.is_available():
        gpu()
    else:
        raise SystemExit("bench/lightning_host.py needs a CUDA GPU, or --cpu under TRITON_INTERPRET=1")


if __name__ == "__main__":
    main()
