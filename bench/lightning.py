"""Lightning attention benchmark on one CUDA GPU (H100/H200): mixarch's Triton kernels against the torch
reference and fla (``chunk_simple_gla`` / ``fused_recurrent_simple_gla`` with ``g_gamma = -s``), gated on
correctness.

    python bench/lightning.py --quick                # smoke run: T = 1K, 4K (compiles, checks, times)
    python bench/lightning.py --out results.md       # T = 4K .. 128K, B=1, H=32, D=128, bf16, then decode

1. Gate: bf16 inputs (dense and packed with an initial state), Triton and fla against the fp32 torch reference on
   the same inputs: relative RMSE of o, final state, dq, dk, dv, dh0 (fla: o, final state, dq, dk, dv), at most
   5e-3. A failing mixarch gate stops the run; a failing fla gate drops fla from the tables.
2. Prefill: median time (``triton.testing.do_bench``, L2 flushed between runs) of the forward and of forward +
   backward (``torch.autograd.grad`` of o w.r.t. q, k, v with a random upstream gradient). Bandwidth is the
   memory floor's bytes over the time: forward reads q, k, v and writes o; forward + backward also reads q, k, v,
   do and writes dq, dk, dv. The reference runs only up to ``--ref-max`` tokens (its chunk loop is Python).
3. Decode: one step of ``lightning_step`` / ``fused_recurrent_simple_gla`` (T = 1, fp32 state) for B = 1 and
   B = 64, as an eager call (Python and launch included) and as a CUDA-graph replay (GPU time); the floor is
   reading and writing the fp32 state once.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch
import triton
from timing import graph_time_ms, time_ms  # bench/timing.py (scripts run from bench/)

from mixarch.kernels.dispatch import choose
from mixarch.ops.lightning import (
    alibi_slopes,
    lightning_attention,
    lightning_step,
    reference_lightning_attention,
)
from mixarch.testing.compare import rel_rmse

TOL = 5e-3
H, D = 32, 128


def _fla():
    try:
        import fla
        from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
    except ImportError:
        return None
    return fla.__version__, chunk_simple_gla, fused_recurrent_simple_gla



def _copy_bandwidth() -> float:
    """Device-to-device copy of 1 GiB, bytes read + written per second."""
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x), quick=False)
    return 2 * x.numel() / (ms * 1e-3)


def _inputs(t: int, dtype=torch.bfloat16, b: int = 1, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(b, t, H, D, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
    return q, k, v, alibi_slopes(H).cuda()


def _fwd_bwd(fn, q, k, v, do):
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def run():
        o = fn(*leaves)
        return torch.autograd.grad(o, leaves, do)

    return run


def _gate_case(t: int, cu: torch.Tensor | None, fla, gen: torch.Generator) -> list[tuple[str, float, float]]:
    """(tensor, mixarch relative RMSE, fla relative RMSE or nan) for one gate input."""
    q, k, v, decay = _inputs(t, seed=2)
    n = 1 if cu is None else cu.numel() - 1
    h0 = torch.randn(n, H, D, D, device="cuda", generator=gen)
    do = torch.randn(1, t, H, D, device="cuda", generator=gen).bfloat16()
    dht = torch.randn(n, H, D, D, device="cuda", generator=gen)
    kw = dict(output_final_state=True, cu_seqlens=cu)

    def grads(fn, inputs):
        leaves = [x.detach().requires_grad_() for x in inputs]
        o, ht = fn(*leaves)
        return [o, ht, *torch.autograd.grad((o.float() * do.float()).sum() + (ht * dht).sum(), leaves)]

    ref = grads(lambda q_, k_, v_, h_: reference_lightning_attention(q_, k_, v_, decay, initial_state=h_, **kw),
                [x.float() for x in (q, k, v)] + [h0])
    backend = choose("lightning_attention", q, k, v, decay, initial_state=h0, **kw).backend
    if backend != "triton":
        raise SystemExit(f"the dispatcher chose {backend!r}, not triton, for bf16 CUDA inputs")
    ours = grads(lambda q_, k_, v_, h_: lightning_attention(q_, k_, v_, decay, initial_state=h_, **kw), [q, k, v, h0])
    theirs = [None] * 6
    if fla is not None:
        fla_kw = dict(g_gamma=-decay, scale=D ** -0.5, output_final_state=True,
                      cu_seqlens=None if cu is None else cu.long())
        theirs = grads(lambda q_, k_, v_, h_: fla[1](q_, k_, v_, initial_state=h_, **fla_kw), [q, k, v, h0])
    return [(name, rel_rmse(r, a) if torch.isfinite(a).all() else float("inf"),
             rel_rmse(r, b) if b is not None else float("nan"))
            for name, r, a, b in zip(("o", "final state", "dq", "dk", "dv", "dh0"), ref, ours, theirs)]


def gate(t: int, fla) -> tuple[list[str], bool]:
    """Markdown rows of relative RMSEs vs the fp32 reference; whether fla passed. Exits if mixarch fails."""
    rows, fla_ok = [], fla is not None
    gen = torch.Generator(device="cuda").manual_seed(1)
    for label, cu in (("dense", None), ("packed", torch.tensor([0, 1, t // 4, t // 4 + 1, t], device="cuda"))):
        for name, err, fla_err in _gate_case(t, cu, fla, gen):
            rows.append(f"| {label} | {name} | {err:.2e} | {fla_err:.2e} |")
            if not err <= TOL:
                raise SystemExit(f"correctness gate failed: {label} {name} relative RMSE {err:.2e} > {TOL}")
            fla_ok = fla_ok and fla_err <= TOL
    return rows, fla_ok


def _prefill_row(t: int, fla, ref_max: int, bandwidth: float, quick: bool) -> str:
    q, k, v, decay = _inputs(t)
    do = torch.randn_like(v)
    floor_fwd, floor_all = 4 * q.numel() * 2, 11 * q.numel() * 2  # bytes: bf16 q, k, v, o (+ do, dq, dk, dv)
    fns = {"triton": lambda q_, k_, v_: lightning_attention(q_, k_, v_, decay)[0]}
    if fla is not None:
        fns["fla"] = lambda q_, k_, v_: fla[1](q_, k_, v_, g_gamma=-decay, scale=D ** -0.5)[0]
    if t <= ref_max:
        fns["reference"] = lambda q_, k_, v_: reference_lightning_attention(q_, k_, v_, decay)[0]
    times = {}
    for name, fn in fns.items():
        with torch.no_grad():
            times[name, "fwd"] = time_ms(lambda fn=fn: fn(q, k, v), quick)
        times[name, "fwd+bwd"] = time_ms(_fwd_bwd(fn, q, k, v, do), quick)
        torch.cuda.empty_cache()

    def cell(name, what):
        return f"{times[name, what]:.3f}" if (name, what) in times else "skipped"

    def ratio(what):
        return f"{times['fla', what] / times['triton', what]:.2f}x" if ("fla", what) in times else "-"

    fwd, both = times["triton", "fwd"], times["triton", "fwd+bwd"]
    return (f"| {t // 1024}K | {cell('triton', 'fwd')} | {cell('fla', 'fwd')} | {cell('reference', 'fwd')} | "
            f"{ratio('fwd')} | {cell('triton', 'fwd+bwd')} | {cell('fla', 'fwd+bwd')} | "
            f"{cell('reference', 'fwd+bwd')} | {ratio('fwd+bwd')} | "
            f"{floor_fwd / fwd / 1e6:.0f} ({floor_fwd / bandwidth * 1e3 / fwd:.0%}) | "
            f"{floor_all / both / 1e6:.0f} ({floor_all / bandwidth * 1e3 / both:.0%}) |")


def prefill(lengths: list[int], fla, ref_max: int, bandwidth: float, quick: bool) -> list[str]:
    rows = []
    for t in lengths:
        rows.append(_prefill_row(t, fla, ref_max, bandwidth, quick))
        print(rows[-1], flush=True)
        torch.cuda.empty_cache()
    return rows



def _decode_rows(b: int, fla, bandwidth: float, quick: bool) -> list[str]:
    q, k, v, decay = _inputs(1, b=b)
    state = torch.randn(b, H, D, D, device="cuda")
    floor_us = 2 * state.numel() * 4 / bandwidth * 1e6
    fns = {"triton": lambda: lightning_step(q, k, v, decay, state)}
    if fla is not None:
        fns["fla"] = lambda: fla[2](q, k, v, g_gamma=-decay, scale=D ** -0.5, initial_state=state,
                                    output_final_state=True)
    fns["reference"] = lambda: reference_lightning_attention(q, k, v, decay, initial_state=state,
                                                             output_final_state=True)
    rows = []
    for name, fn in fns.items():
        with torch.no_grad():
            eager = f"{time_ms(fn, quick) * 1e3:.1f}"
            # the reference validates decay on the host (a sync), which a CUDA graph cannot capture
            graph = "-" if name == "reference" else f"{graph_time_ms(fn, quick) * 1e3:.1f}"
        rows.append(f"| {b} | {name} | {eager} | {graph} | {floor_us:.1f} |")
        print(rows[-1], flush=True)
    return rows


def decode(fla, bandwidth: float, quick: bool) -> list[str]:
    return [row for b in (1, 64) for row in _decode_rows(b, fla, bandwidth, quick)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 1K, 4K only, shorter timing")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 4K .. 128K)")
    parser.add_argument("--ref-max", type=int, default=16384, help="longest T for the torch reference")
    parser.add_argument("--no-fla", action="store_true", help="leave fla out")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/lightning.py needs a CUDA GPU")
    lengths = args.lengths or ([1024, 4096] if args.quick else [4096, 16384, 32768, 65536, 131072])
    fla = None if args.no_fla else _fla()
    torch.backends.cuda.matmul.allow_tf32 = False
    bandwidth = _copy_bandwidth()
    lines = [
        "### Lightning attention: results",
        "",
        f"{torch.cuda.get_device_name()}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"torch {torch.__version__}, triton {triton.__version__}, "
        f"fla {fla[0] if fla else 'not installed'}, Python {sys.version.split()[0]}; "
        f"device copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write).",
        "",
        f"Correctness gate (bf16, B=1, T={lengths[-1] if args.quick else 4096}, H={H}, D={D}; relative RMSE against "
        f"the fp32 torch reference, limit {TOL}):",
        "",
        "| inputs | tensor | mixarch triton | fla |",
        "|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    rows, fla_ok = gate(lengths[-1] if args.quick else 4096, fla)
    print("\n".join(rows), flush=True)
    lines += rows
    if fla is not None and not fla_ok:
        lines.append("\nfla failed the gate: it is left out of the timings.")
        fla = None
    header = ["", f"Prefill (B=1, H={H}, D={D}, bf16), median ms; bandwidth = memory floor bytes / time in GB/s "
              "(share of the copy bandwidth):", "",
              "| T | triton fwd | fla fwd | reference fwd | fwd speed-up vs fla | triton fwd+bwd | fla fwd+bwd | "
              "reference fwd+bwd | fwd+bwd speed-up vs fla | triton fwd GB/s | triton fwd+bwd GB/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    lines += header + prefill(lengths, fla, args.ref_max, bandwidth, args.quick)
    header = ["", f"Decode step (T=1, H={H}, D={D}, bf16 q/k/v, fp32 state), microseconds:", "",
              "| B | backend | eager call | CUDA-graph replay | floor (state read + write) |", "|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    lines += header + decode(fla, bandwidth, args.quick)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
