"""Where InfLLM-V2's time goes on one CUDA GPU: per-kernel CUDA time, launch-configuration variants, eager host
time. The measurements behind the profile, launch-configuration and host-time paragraphs of docs/benchmarks.md.

    python bench/infllm_v2_profile.py                 # per-kernel profile at 128K, then eager host time
    python bench/infllm_v2_profile.py --sweep         # also the backward's launch variants (~1 minute more)

Shapes as bench/infllm_v2.py: B = 1, Hq = 32, Hkv = 2, D = 128, bf16, random normal inputs, SALA geometry, C2
normalizer, always sparse.

1. Profile (``torch.profiler``, CUDA time per kernel, after two untimed runs): stage 2 forward + backward as the
   layer calls it (told the forced blocks), then the whole layer (key compression, stage 1, top-k, stage 2).
2. ``--sweep``: stage 2's backward kernels under other ``LAUNCH`` / ``WINDOW_ROWS`` / ``DKV_ROWS`` entries
   (mixarch.kernels.triton.infllm_v2.sparse), each checked against the committed configuration's gradients.
3. One decode step against a ``--decode-len`` cache: CUDA time per kernel (eager, profiler) and the CUDA-graph
   time of the selection, of stage 2 and of both (what bench/infllm_v2.py's decode rows time).
4. Eager host time of one decode step, through the custom ops and with direct launches (what eager calls
   without autograd take), in one process: microseconds per call over 300 calls.
"""

from __future__ import annotations

import argparse
import os

import torch
from timing import graph_time_ms, host_us  # bench/timing.py (scripts run from bench/)
from torch.profiler import ProfilerActivity, profile

import mixarch.kernels.triton.infllm_v2.select as sel
import mixarch.kernels.triton.infllm_v2.sparse as sp
from mixarch.kernels import KERNELS_ENV
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys, infllm_v2_attention

SALA = dict(block_size=64, kernel_size=32, kernel_stride=16, init_blocks=1, local_blocks=32, topk=96)
FORCING = dict(init_blocks=SALA["init_blocks"], local_blocks=SALA["local_blocks"])
#: backward launch variants: (LAUNCH entries, WINDOW_ROWS entries, DKV_ROWS or None for the committed value)
VARIANTS = [
    ({"dkv_window": (8, 2), "dkv": (8, 2)}, {"dkv": 128}, None),
    ({"dkv_window": (4, 3), "dkv": (4, 3)}, {}, None),
    ({}, {}, 128),
    ({}, {"dkv": 32}, 32),
    ({"dkv_window": (8, 3), "dkv": (8, 3)}, {}, 32),
    ({"dq_window": (8, 3), "dq_gather": (4, 2)}, {}, None),
    ({"dq_window": (4, 2), "dq_gather": (2, 3)}, {"dq": 64}, None),
]


def _inputs(t: int, t_q: int):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, t_q, 32, 128, device="cuda", generator=gen).bfloat16()
    k, v = (torch.randn(1, t, 2, 128, device="cuda", generator=gen).bfloat16() for _ in range(2))
    return q, k, v


def _kernel_times(fn) -> dict[str, float]:
    """Milliseconds of CUDA time per kernel name in one call of ``fn`` (after two untimed calls)."""
    fn(), fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / 1e3 for e in prof.key_averages() if e.device_time_total > 0}


def _print_times(title: str, times: dict[str, float], rows: int = 12) -> None:
    print(f"\n{title}: {sum(times.values()):.1f} ms of CUDA time", flush=True)
    for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"  {ms:9.3f} ms  {name[:90]}", flush=True)


#: stage 2's forward arguments after ``(q, k, v, indices)``: block size, scale, init and local blocks (SALA)
STAGE2 = (SALA["block_size"], 128 ** -0.5, SALA["init_blocks"], SALA["local_blocks"])


def _prefill_case(t: int):
    """``t`` queries and keys and their blocks from the real selection: ``(q, k, v, idx)``; stage 2's forward as
    the layer calls it is ``sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)``."""
    q, k, v = _inputs(t, t)
    with torch.no_grad():
        _, idx = infllm_v2_attention(q, k, v, **SALA, dense_len=0, exact_normalizer=False, return_indices=True)
    return q, k, v, idx


def profile_prefill(t: int, sweep: bool) -> None:
    q, k, v, idx = _prefill_case(t)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    do = torch.randn_like(q)

    def stage2():
        o = sp.triton_sparse_block_attention(*leaves, idx, block_size=SALA["block_size"], **FORCING)
        return torch.autograd.grad(o, leaves, do)

    def layer():
        o = infllm_v2_attention(*leaves, **SALA, dense_len=0, exact_normalizer=False)
        return torch.autograd.grad(o, leaves, do)

    _print_times(f"stage 2 forward + backward at T={t}", _kernel_times(stage2))
    _print_times(f"layer forward + backward at T={t}", _kernel_times(layer))
    if not sweep:
        return
    ref = stage2()
    base = (dict(sp.LAUNCH), dict(sp.WINDOW_ROWS), sp.DKV_ROWS)
    print("\nbackward launch variants (ms of CUDA time per backward kernel; relative difference of the gradients "
          "to the committed configuration's):", flush=True)
    for launch, rows, dkv_rows in [({}, {}, None), *VARIANTS]:
        sp.LAUNCH.update(launch)
        sp.WINDOW_ROWS.update(rows)
        sp.DKV_ROWS = base[2] if dkv_rows is None else dkv_rows
        try:
            grads = stage2()
            diff = max(((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in zip(grads, ref))
            bwd = {n: ms for n, ms in _kernel_times(stage2).items() if n.startswith(("_dq", "_dkv"))}
            cells = ", ".join(f"{n} {ms:.1f}" for n, ms in sorted(bwd.items()))
            print(f"  {launch or 'committed'} {rows} DKV_ROWS={sp.DKV_ROWS}: diff {diff:.1e} | {cells} | "
                  f"sum {sum(bwd.values()):.1f}", flush=True)
        except Exception as err:  # noqa: BLE001 - a variant that does not compile or fit is reported, not fatal
            print(f"  {launch} {rows} {dkv_rows}: {type(err).__name__}: {str(err)[:200]}", flush=True)
        finally:
            sp.LAUNCH.clear(), sp.LAUNCH.update(base[0])
            sp.WINDOW_ROWS.clear(), sp.WINDOW_ROWS.update(base[1])
            sp.DKV_ROWS = base[2]


def _decode_case(t: int):
    """One query against a ``t``-key cache: ``(q, k, v, c1, c2, select_args, stage_2_args)`` (positional
    arguments of the selection and of stage 2's forward on its blocks)."""
    q, k, v = _inputs(t, 1)
    c1 = compress_keys(k, SALA["kernel_size"], SALA["kernel_stride"])
    c2 = compress_keys(k, C2_FACTOR * SALA["kernel_size"], C2_FACTOR * SALA["kernel_stride"])
    select_args = (q, c1, c2, t, SALA["block_size"], SALA["kernel_size"], SALA["kernel_stride"],
                   SALA["init_blocks"], SALA["local_blocks"], SALA["topk"], 128 ** -0.5, False)
    with torch.no_grad():
        idx = sel._select(*select_args, direct=True)
    fwd_args = (q, k, v, idx, *STAGE2)
    return q, k, v, c1, c2, select_args, fwd_args


def profile_decode(t: int) -> None:
    q, k, v, c1, c2, select_args, fwd_args = _decode_case(t)
    with torch.no_grad():
        cases = {"select": lambda: sel._select(*select_args, direct=True),
                 "stage 2": lambda: sp._sparse_fwd(*fwd_args, direct=True),
                 "layer (select + stage 2)": lambda: infllm_v2_attention(
                     q, k, v, **SALA, dense_len=0, exact_normalizer=False, compressed_k=c1, compressed_k2=c2)}
        us = {name: _kernel_times(fn) for name, fn in cases.items()}
        print(f"\ndecode step at {t // 1024}K: CUDA time per kernel (us, eager) and CUDA-graph time of the call:",
              flush=True)
        for name, fn in cases.items():
            kernels = ", ".join(f"{n[:40]} {ms * 1e3:.1f}" for n, ms in sorted(us[name].items(), key=lambda x: -x[1]))
            print(f"  {name}: graph {graph_time_ms(fn, False) * 1e3:.1f} us | {kernels}", flush=True)


def host_time(t: int) -> None:
    _, _, _, _, _, select_args, fwd_args = _decode_case(t)
    with torch.no_grad():
        cases = {"select through the custom op": lambda: sel.infllm_v2_select_op(*select_args),
                 "select, direct launches": lambda: sel._select(*select_args, direct=True),
                 "stage 2 through the custom op": lambda: sp.sparse_fwd_op(*fwd_args),
                 "stage 2, direct launches": lambda: sp._sparse_fwd(*fwd_args, direct=True)}
        print(f"\neager decode step at {t // 1024}K, microseconds per call (host-bound: GPU time is ~10-20 us):",
              flush=True)
        for name, fn in cases.items():
            print(f"  {name}: {host_us(fn):.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=131072, help="prefill length (default 128K)")
    parser.add_argument("--decode-len", type=int, default=131072, help="decode context (default 128K)")
    parser.add_argument("--sweep", action="store_true", help="also time the backward's launch variants")
    parser.add_argument("--decode-only", action="store_true", help="only the decode step (3, 4)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/infllm_v2_profile.py needs a CUDA GPU")
    os.environ[KERNELS_ENV] = "infllm_v2_select=triton,infllm_v2_sparse_attention=triton"
    props = torch.cuda.get_device_properties(0)
    print(f"card: {props.name}, torch {torch.__version__}", flush=True)
    if not args.decode_only:
        profile_prefill(args.length, args.sweep)
    torch.cuda.empty_cache()
    profile_decode(args.decode_len)
    host_time(args.decode_len)


if __name__ == "__main__":
    main()
