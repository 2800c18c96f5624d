"""InfLLM-V2 benchmark on one CUDA GPU (H100/H200): mixarch's Triton kernels against the torch reference, fla's
``parallel_nsa`` (selected-block attention on the same blocks) and torch SDPA (flash) causal GQA attention,
gated on correctness.

    python bench/infllm_v2.py --quick                # smoke run: T = 4K, 8K, decode at 16K
    python bench/infllm_v2.py --out results.md       # T = 4K .. 128K, then decode at 128K

Shapes: B = 1, Hq = 32, Hkv = 2 (G = 16), D = 128, bf16, SALA geometry (block 64, C1 32/16, C2 128/64, init 1,
local 32, top-96, the released C2 normalizer; ``--exact`` for the exact one), always the sparse path (dense_len 0).

1. Gate (T = 4K and a decode step at 16K, a reduced top-16 / local-4 geometry so that selection is non-trivial):
   the Triton selection against the reference's (equal up to near-ties in fp64 scores), and Triton stage 2 and
   fla on the reference's blocks against the fp32 reference: relative RMSE of o, dq, dk, dv at most 5e-3. A
   failing mixarch gate stops the run; a failing fla gate drops fla from the tables.
2. Prefill: median milliseconds (``triton.testing.do_bench``, L2 flushed) of the forward and of forward +
   backward (``torch.autograd.grad`` of o w.r.t. q, k, v): the whole op ``infllm_v2_attention`` with the Triton
   backends (key compression, stage 1, top-k, stage 2), stage 2 alone as the layer calls it (told the forced
   init + local blocks, which it runs as dense tiles), stage 2 on the same blocks without that hint ("gathers
   only": every block gathered per query), fla ``parallel_nsa`` on the same blocks, SDPA causal, and the torch reference up to ``--ref-max`` tokens (O(T^2) memory). TFLOP/s count the
   attention matmuls actually needed: stage 2 ``4 * Hq * D * 64 * sum of visible selected keys``, SDPA
   ``2 * Hq * D * T^2`` (causal), backward 2.5x the forward.
3. Decode at ``--decode-len`` context: one query against the cache (its C1/C2 keys precomputed, as the mixer
   keeps them): the layer's decode step (op ``infllm_v2_decode``: stage 1, the top-k by rank counting, stage 2;
   also without programmatic dependent launch, ``MIXARCH_PDL=0``), the two ops select + stage 2, stage 2 alone,
   and SDPA over the whole cache, as eager calls and as CUDA-graph replays (GPU time). The floor is reading the
   selected K/V (96 blocks) plus the C1/C2 keys. The gate's decode case also checks the decode op: the blocks
   of select, the output against the fp32 reference.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch
import torch.nn.functional as F
import triton
from timing import graph_time_ms, time_ms  # bench/timing.py (scripts run from bench/)

from mixarch.kernels import KERNELS_ENV, choose
from mixarch.kernels.dispatch import call
from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention
from mixarch.kernels.triton.pdl import ENV as PDL_ENV
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys, infllm_v2_attention
from mixarch.ops.infllm_v2.attention import reference_infllm_v2_select, selection_mask, sparse_block_attention
from mixarch.testing.compare import rel_rmse
from mixarch.testing.conformance import Case
from mixarch.testing.conformance.infllm_v2 import check_selection

TOL = 5e-3
HQ, HKV, D = 32, 2, 128
SALA = dict(block_size=64, kernel_size=32, kernel_stride=16, init_blocks=1, local_blocks=32, topk=96)
GATE = dict(SALA, local_blocks=4, topk=16)
TRITON = "infllm_v2_select=triton,infllm_v2_sparse_attention=triton,infllm_v2_decode=triton"
REFERENCE = "infllm_v2_select=reference,infllm_v2_sparse_attention=reference,infllm_v2_decode=reference"


def _fla():
    """``(version, fn(q, k, v, indices [B, Hkv, T, n]) -> o)`` or None."""
    try:
        import fla
        from fla.ops.nsa.parallel import ParallelNSAFunction
    except Exception as err:  # noqa: BLE001 - not installed, or broken against this torch / transformers
        print(f"fla unavailable ({type(err).__name__}: {err}): left out", flush=True)
        return None

    def nsa(q, k, v, indices, scale):
        # fla: [B, T, Hkv, S] with S a power of two (its backward's CSR build), -1 entries skipped
        s = triton.next_power_of_2(indices.shape[-1])
        block_indices = F.pad(indices, (0, s - indices.shape[-1]), value=-1).transpose(1, 2).contiguous()
        return ParallelNSAFunction.apply(q, k, v, block_indices, s, 64, scale, None)

    return fla.__version__, nsa




def _inputs(t: int, t_q: int | None = None, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(1, t if t_q is None else t_q, HQ, D, device="cuda", generator=gen).bfloat16()
    k, v = (torch.randn(1, t, HKV, D, device="cuda", generator=gen).bfloat16() for _ in range(2))
    return q, k, v


def _layer(kernels: str, geo: dict, exact: bool):
    def run(q, k, v, **kw):
        os.environ[KERNELS_ENV] = kernels
        return infllm_v2_attention(q, k, v, **geo, dense_len=0, exact_normalizer=exact, **kw)

    return run


def _sdpa_flash(q, k, v, causal: bool = True):
    """SDPA, flash backend only: GQA natively (``enable_gqa``) when supported, else with KV expanded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        try:
            o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=True)
        except RuntimeError:
            g = HQ // HKV
            o = F.scaled_dot_product_attention(qt, kt.repeat_interleave(g, 1), vt.repeat_interleave(g, 1),
                                               is_causal=causal)
    return o.transpose(1, 2)


def _grads(fn, inputs, do):
    leaves = [x.detach().requires_grad_() for x in inputs]
    o = fn(*leaves)
    return [o, *torch.autograd.grad(o, leaves, do)]


def _gate_case(label: str, t: int, t_q: int | None, exact: bool, fla) -> tuple[list[str], bool]:
    q, k, v = _inputs(t, t_q, seed=1)
    scale = D ** -0.5
    c1 = compress_keys(k, GATE["kernel_size"], GATE["kernel_stride"])
    c2 = compress_keys(k, C2_FACTOR * GATE["kernel_size"], C2_FACTOR * GATE["kernel_stride"])
    sel = {n: GATE[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk")}
    kw = dict(**sel, scale=scale, exact_normalizer=exact)
    os.environ[KERNELS_ENV] = TRITON
    if choose("infllm_v2_select", q, c1, c2, t, **kw).backend != "triton":
        raise SystemExit("the dispatcher does not choose the Triton selection for bf16 CUDA inputs")
    idx = call("infllm_v2_select", q, c1, c2, t, **kw)
    idx_ref = reference_infllm_v2_select(q.float(), c1.float(), c2.float(), t, **kw)
    check_selection(Case(args=(q.float(), c1.float(), c2.float(), t), kwargs=kw, label=label),
                    {"indices": idx}, {"indices": idx_ref})
    differ = (idx != idx_ref).any(-1).float().mean().item()
    rows = [f"| {label} | selection | {differ:.1e} of the rows differ, by near-ties only | - |"]
    do = torch.randn_like(q)
    ref = _grads(lambda q_, k_, v_: sparse_block_attention(q_, k_, v_, idx_ref, block_size=64),
                 [x.float() for x in (q, k, v)], do.float())
    # ours as the layer calls it: told the forced blocks (all selected here), which it runs as dense tiles
    ours = _grads(lambda q_, k_, v_: call("infllm_v2_sparse_attention", q_, k_, v_, idx_ref, block_size=64,
                                          **_forcing(GATE)), [q, k, v], do)
    theirs = [None] * 4  # fla's backward needs Tq == Tk
    if fla is not None and t_q is None:
        theirs = _grads(lambda q_, k_, v_: fla[1](q_, k_, v_, idx_ref, scale), [q, k, v], do)
    fla_ok = True
    for name, r, a, b in zip(("o", "dq", "dk", "dv"), ref, ours, theirs):
        err = rel_rmse(r, a)
        ferr = rel_rmse(r, b) if b is not None else float("nan")
        if err > TOL or not torch.isfinite(a).all():
            raise SystemExit(f"correctness gate failed: {label} stage 2 {name} relative RMSE {err:.2e} > {TOL}")
        fla_ok = fla_ok and (b is None or ferr <= TOL)
        rows.append(f"| {label} | stage 2 {name} | {err:.2e} | {ferr:.2e} |")
    if t_q == 1:  # the decode op (top-k by rank counting): the Triton selection's blocks, the reference's output
        with torch.no_grad():
            o, selected = call("infllm_v2_decode", q, k, v, c1, c2, **kw)
        if not torch.equal(selected, selection_mask(idx, selected.shape[-1])):
            raise SystemExit(f"correctness gate failed: {label} the decode op selects other blocks than select")
        ref_o = sparse_block_attention(*(x.float() for x in (q, k, v)), idx, block_size=64)
        err = rel_rmse(ref_o, o)
        if err > TOL or not torch.isfinite(o).all():
            raise SystemExit(f"correctness gate failed: {label} decode op o relative RMSE {err:.2e} > {TOL}")
        rows.append(f"| {label} | decode op o (same blocks as select) | {err:.2e} | - |")
    return rows, fla_ok


def gate(exact: bool, fla) -> tuple[list[str], bool]:
    """Markdown rows of relative RMSEs vs the fp32 reference; whether fla passed."""
    rows, fla_ok = [], fla is not None
    for label, t, t_q in (("prefill 4K", 4096, None), ("decode at 16K", 16384, 1)):
        case_rows, ok = _gate_case(label, t, t_q, exact, fla)
        rows += case_rows
        fla_ok = fla_ok and ok
        torch.cuda.empty_cache()
    return rows, fla_ok


def _sparse_flops(idx: torch.Tensor, t: int) -> float:
    """Forward matmul FLOPs of stage 2: 4 * Hq * D per (query, visible selected key)."""
    pos = torch.arange(t, device=idx.device)
    keys = (pos[:, None] - idx * 64 + 1).clamp(0, 64) * (idx >= 0)  # [B, Hkv, T, n]
    return 4.0 * (HQ // HKV) * D * keys.sum().item()


def _forcing(geo: dict) -> dict:
    """The forcing arguments :func:`infllm_v2_attention` passes to stage 2."""
    return dict(init_blocks=geo["init_blocks"], local_blocks=geo["local_blocks"])


def _prefill_one(t: int, exact: bool, fla, ref_max: int, quick: bool) -> list[str]:
    layer, ref_layer = _layer(TRITON, SALA, exact), _layer(REFERENCE, SALA, exact)
    q, k, v = _inputs(t)
    do = torch.randn_like(q)
    with torch.no_grad():
        _, idx = layer(q, k, v, return_indices=True)
    fns = {"layer": layer,
           "stage 2": lambda q_, k_, v_: triton_sparse_block_attention(q_, k_, v_, idx, block_size=64,
                                                                       **_forcing(SALA)),
           "gathers only": lambda q_, k_, v_: triton_sparse_block_attention(q_, k_, v_, idx, block_size=64),
           "sdpa": _sdpa_flash}
    if fla is not None:
        fns["fla"] = lambda q_, k_, v_: fla[1](q_, k_, v_, idx, D ** -0.5)
    if t <= ref_max:
        fns["reference"] = ref_layer
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    times = {}
    for name, fn in fns.items():
        with torch.no_grad():
            times[name, "fwd"] = time_ms(lambda fn=fn: fn(q, k, v), quick)
        times[name, "fwd+bwd"] = time_ms(lambda fn=fn: torch.autograd.grad(fn(*leaves), leaves, do), quick)
        torch.cuda.empty_cache()
    flops = {"stage 2": _sparse_flops(idx, t), "gathers only": _sparse_flops(idx, t), "sdpa": 2.0 * HQ * D * t * t}

    def cell(name, what):
        if (name, what) not in times:
            return "-"
        if name not in flops:
            return f"{times[name, what]:.2f}"
        needed = flops[name] * (3.5 if what == "fwd+bwd" else 1)  # backward: 2.5x the forward's matmuls
        return f"{times[name, what]:.2f} ({needed / times[name, what] / 1e9:.0f})"

    rows = []
    for what in ("fwd", "fwd+bwd"):
        fla_ratio = f"{times['fla', what] / times['stage 2', what]:.2f}x" if ("fla", what) in times else "-"
        rows.append(f"| {t // 1024}K | {what} | {cell('layer', what)} | {cell('stage 2', what)} | "
                    f"{cell('gathers only', what)} | "
                    f"{cell('fla', what)} | {cell('sdpa', what)} | {cell('reference', what)} | "
                    f"{times['sdpa', what] / times['layer', what]:.2f}x | {fla_ratio} |")
        print(rows[-1], flush=True)
    return rows


def prefill(lengths: list[int], exact: bool, fla, ref_max: int, quick: bool) -> list[str]:
    rows = []
    for t in lengths:
        rows += _prefill_one(t, exact, fla, ref_max, quick)
        torch.cuda.empty_cache()
    return rows


def _kv_bytes(n: int) -> int:
    """Bytes of the bf16 K and V of ``n`` keys of every KV head."""
    return n * HKV * D * 2 * 2


def _without_pdl(call):
    """``call()`` with programmatic dependent launch off (``MIXARCH_PDL=0``; the A/B of the decode rows)."""
    os.environ[PDL_ENV] = "0"
    try:
        return call()
    finally:
        del os.environ[PDL_ENV]


#: the selection's keyword arguments of the SALA geometry
SELECT = {n: SALA[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk")}


def decode(t: int, exact: bool, quick: bool) -> list[str]:
    q, k, v = _inputs(t, 1, seed=3)
    c1 = compress_keys(k, SALA["kernel_size"], SALA["kernel_stride"])
    c2 = compress_keys(k, C2_FACTOR * SALA["kernel_size"], C2_FACTOR * SALA["kernel_stride"])
    layer = _layer(TRITON, SALA, exact)
    with torch.no_grad():
        _, idx = layer(q, k, v, compressed_k=c1, compressed_k2=c2, return_indices=True)
        forcing = _forcing(SALA)
        fns = {
            "triton decode op": (step := lambda: layer(q, k, v, compressed_k=c1, compressed_k2=c2)),
            "the same, without PDL": lambda: _without_pdl(step),
            "triton select + stage 2 (two ops)": lambda: triton_sparse_block_attention(
                q, k, v, call("infllm_v2_select", q, c1, c2, t, **SELECT, scale=D ** -0.5, exact_normalizer=exact),
                block_size=64, **forcing),
            "triton stage 2 alone": lambda: triton_sparse_block_attention(q, k, v, idx, block_size=64, **forcing),
            "sdpa (flash) over the whole cache": lambda: _sdpa_flash(q, k, v, causal=False),
        }
        select_floor = _kv_bytes(SALA["topk"] * 64) + (c1.numel() + c2.numel()) * 2
        floors = {"triton decode op": select_floor, "the same, without PDL": select_floor,
                  "triton select + stage 2 (two ops)": select_floor,
                  "triton stage 2 alone": _kv_bytes(SALA["topk"] * 64),
                  "sdpa (flash) over the whole cache": _kv_bytes(t)}
        times = {name: (time_ms(fn, quick) * 1e3, graph_time_ms(fn, quick) * 1e3) for name, fn in fns.items()}
    sdpa = times["sdpa (flash) over the whole cache"][1]
    rows = []
    for name, (eager, graph) in times.items():
        rows.append(f"| {t // 1024}K | {name} | {eager:.1f} | {graph:.1f} | {sdpa / graph:.2f}x | "
                    f"{floors[name] / 1e6:.1f} MB |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 4K, 8K and decode at 16K, shorter timing")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 4K .. 128K)")
    parser.add_argument("--decode-len", type=int, help="decode context (default 128K; 16K with --quick)")
    parser.add_argument("--ref-max", type=int, default=4096, help="longest T for the torch reference")
    parser.add_argument("--exact", action="store_true", help="exact stage-1 normalizer instead of C2")
    parser.add_argument("--no-fla", action="store_true", help="leave fla out")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/infllm_v2.py needs a CUDA GPU")
    lengths = args.lengths or ([4096, 8192] if args.quick else [4096, 16384, 32768, 65536, 131072])
    decode_len = args.decode_len or (16384 if args.quick else 131072)
    fla = None if args.no_fla else _fla()
    torch.backends.cuda.matmul.allow_tf32 = False

    props = torch.cuda.get_device_properties(0)
    head = [f"card: {props.name} ({props.multi_processor_count} SMs), {datetime.date.today()}, "
            f"torch {torch.__version__}, triton {triton.__version__}, "
            f"fla {fla[0] if fla else 'not installed'}, python {sys.version.split()[0]}",
            f"B=1, Hq={HQ}, Hkv={HKV}, D={D}, bf16, block 64, C1 32/16, init 1, local 32, top-{SALA['topk']}, "
            f"{'exact' if args.exact else 'C2 (released)'} normalizer"]
    print("\n".join(head), flush=True)
    gate_rows, fla_ok = gate(args.exact, fla)
    out = ["", *head, "", "Correctness gate (relative RMSE vs the fp32 reference; selection vs the reference's):", "",
           "| case | tensor | triton | fla parallel_nsa |", "|---|---|---|---|", *gate_rows]
    print("\n".join(out[-len(gate_rows) - 2:]), flush=True)
    if fla is not None and not fla_ok:
        print("fla failed the gate: left out of the tables", flush=True)
        fla = None
    table = ["", "Prefill, milliseconds (TFLOP/s of the needed matmuls):", "",
             "| T | pass | layer (triton) | stage 2 (triton) | stage 2, gathers only | fla parallel_nsa, same blocks | "
             "SDPA flash causal | torch reference | SDPA / layer | fla / stage 2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(table), flush=True)
    out += table + prefill(lengths, args.exact, fla, args.ref_max, args.quick)
    table = ["", "Decode (one query), microseconds:", "",
             "| context | what | eager | CUDA graph | SDPA / this (graph) | bytes floor |", "|---|---|---|---|---|---|"]
    print("\n".join(table), flush=True)
    out += table + decode(decode_len, args.exact, args.quick)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
