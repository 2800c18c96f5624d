"""Lightning state passes that skip the chunks whose decay weights underflow (``chunk.UNDERFLOW_LOG2``), with the
segment length ``chunk.segment_size`` picks and with twice that, against the pass that reads every chunk: same
process, on a Hopper GPU.

    python bench/lightning_skip_ab.py [--lengths 131072 32768] [--fla]

B = 1, 32 heads of 128 with the ALiBi slopes, bf16 (the issue's Lightning benchmark). For each length: do_bench
medians (``bench/timing.py``, L2 flushed) of the forward's Gluon state pass (k, v) and the backward's (q, do) in
the three variants, alternating three times, and whether each variant's states equal those of the pass that reads
every chunk, bit for bit (same segments only); then the whole forward (``lightning_attention`` without gradients)
and forward + backward the same way, with their outputs compared bit for bit (longer segments: to 1e-3 relative
RMSE, since the chunk sweeps' rounding depends on where segments start); with ``--fla``, fla's
``chunk_simple_gla`` (``g_gamma = -s``) in the same process, and the forward's ratio to it.
"""

from __future__ import annotations

import argparse

import torch
from timing import time_ms  # bench/

from mixarch.kernels.triton.lightning import chunk as C
from mixarch.kernels.triton.lightning import gluon_state as S
from mixarch.kernels.triton.lightning import op
from mixarch.ops.lightning import alibi_slopes, lightning_attention
from mixarch.testing.compare import rel_rmse

H, D = 32, 128
#: name -> (chunk.UNDERFLOW_LOG2, segment length factor); the first is the reference (every chunk read)
VARIANTS = {"every chunk": (0.0, 1), "skip": (C.UNDERFLOW_LOG2, 1), "skip, 2x segments": (C.UNDERFLOW_LOG2, 2)}
_SEGMENT_SIZE = op.segment_size


def _set(variant: str) -> None:
    if variant not in VARIANTS:  # fla
        return
    C.UNDERFLOW_LOG2, factor = VARIANTS[variant]
    op.segment_size = lambda *args: factor * _SEGMENT_SIZE(*args)


def _rounds(fns: dict, results: dict) -> dict:
    """Three alternating rounds of ``fns[variant]()`` timings, each variant's first result kept in ``results``."""
    times = {name: [] for name in fns}
    try:
        for _ in range(3):
            for name, fn in fns.items():
                _set(name)
                results.setdefault(name, fn())
                times[name].append(time_ms(fn, False))
    finally:
        _set("skip")
    return times


def _same(results: dict) -> dict:
    """Per variant: "=" (bit for bit the reference's), its largest relative RMSE, or "n/a" (other segments)."""
    want = results["every chunk"]
    want = want if isinstance(want, tuple) else (want,)
    out = {}
    for name, got in results.items():
        got = got if isinstance(got, tuple) else (got,)
        if any(a.shape != b.shape for a, b in zip(got, want)):
            out[name] = "n/a"
        elif all(torch.equal(a, b) for a, b in zip(got, want)):
            out[name] = "="
        else:
            out[name] = f"~{max(rel_rmse(b.float(), a.float()) for a, b in zip(got, want)):.1e}"
    return out


def _line(label: str, times: dict, same: dict) -> str:
    cells = [f"{name} {', '.join(f'{ms:.3f}' for ms in ts)} ({same[name]})" for name, ts in times.items()]
    return f"{label}, ms: " + "; ".join(cells)


def run(t: int, fla: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(t)
    decay, scale = alibi_slopes(H).cuda(), D ** -0.5
    q, k, v, do = (torch.randn(1, t, H, D, device="cuda", generator=gen).bfloat16() for _ in range(4))
    seg = C.segment_size(t, H, C.CHUNK)
    lays = {name: C.make_layout(1, t, None, factor * seg) for name, (_, factor) in VARIANTS.items()}
    print(f"T={t // 1024}K: segments of {seg} tokens ({2 * seg} for the last variant)", flush=True)
    for label, a, b, reverse in (("forward (k, v)", k, v, False), ("backward (q, do)", q, do, True)):
        results = {}
        fns = {name: (lambda a=a, b=b, r=reverse, lay=lays[name]:
                      S.segment_states(a, b, decay, lay, scale, r, C.UNDERFLOW_LOG2)) for name in VARIANTS}
        times = _rounds(fns, results)
        print(_line(f"T={t // 1024}K state pass {label}", times, _same(results)), flush=True)

    def fwd():
        with torch.no_grad():
            return lightning_attention(q, k, v, decay)[0]

    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def fwd_bwd():
        o = lightning_attention(*leaves, decay)[0]
        return torch.autograd.grad(o, leaves, do)

    for label, fn in (("forward", fwd), ("forward + backward", fwd_bwd)):
        results = {}
        fns = {name: fn for name in VARIANTS}
        if fla and label == "forward":  # in the same rounds, its o compared with ours
            from fla.ops.simple_gla import chunk_simple_gla

            def fla_fwd():
                with torch.no_grad():
                    return chunk_simple_gla(q, k, v, g_gamma=-decay, scale=scale)[0]
            fns["fla"] = fla_fwd
        times = _rounds(fns, results)
        print(_line(f"T={t // 1024}K {label}", times, _same(results)), flush=True)
        if "fla" in times:
            fla_ms = sorted(times.pop("fla"))[1]
            ratios = "; ".join(f"{name} {fla_ms / sorted(ts)[1]:.2f}x" for name, ts in times.items())
            print(f"T={t // 1024}K forward, fla / ours (medians of the three rounds): {ratios}", flush=True)
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072, 32768])
    parser.add_argument("--fla", action="store_true", help="also time fla's chunk_simple_gla forward")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in args.lengths:
        run(t, args.fla)


if __name__ == "__main__":
    main()
