"""InfLLM-V2 stage 2: the gather kernels' key / value tiles by TMA (``TMA_GATHERS``) against per-thread loads, same
process.

    python bench/tma_ab.py              # TMA against per-thread loads (prefill, then decode)
    python bench/tma_ab.py --configs    # launch configurations of the TMA gather kernels (128K)
    python bench/tma_ab.py --decode     # decode only
    python bench/tma_ab.py --keys       # stage 1's compressed-key tiles by TMA against per-thread loads
    python bench/tma_ab.py --window     # the window kernel's tiles by TMA against per-thread loads, then its
                                        # launch configurations

Stage 2 as the layer calls it (told the forced blocks: window tiles, then the free blocks gathered) at T = 128K
and 32K (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, the blocks of the real selection): do_bench
medians of the forward and of the backward, the two variants alternating three times, the CUDA time of the
gather kernels (``torch.profiler``), and whether o and dq are bit-identical between the variants. Decode: one
query against a 128K and a 16K cache, CUDA-graph replays of stage 2's forward (the slot-split gathers and their
merge), alternating three times, outputs compared bit for bit.
"""

from __future__ import annotations

import sys

import torch
from infllm_v2_profile import SALA, STAGE2, _decode_case, _inputs, _kernel_times, _prefill_case  # bench/
from timing import graph_time_ms, time_ms

import mixarch.kernels.triton.infllm_v2.select as sel
import mixarch.kernels.triton.infllm_v2.sparse as sp
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys


def ab(t: int) -> None:
    """Time and compare the two variants at ``t`` tokens."""
    q, k, v, idx = _prefill_case(t)
    do = torch.randn_like(q)

    def fwd():
        return sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)

    results, times, kernels = {}, {}, {}
    for n in range(6):
        tma = n % 2 == 0
        sp.TMA_GATHERS = tma
        try:
            o, lse = fwd()

            def bwd(o=o, lse=lse):
                return sp._sparse_bwd(q, k, v, idx, o, lse, do, *STAGE2, direct=True)

            results.setdefault(tma, (o, bwd()[0]))
            times.setdefault(tma, []).append(f"{time_ms(fwd, False):.2f} / {time_ms(bwd, False):.2f}")
            if n < 2:
                kt = {**_kernel_times(fwd), **_kernel_times(bwd)}
                kernels[tma] = ", ".join(f"{name} {ms:.2f}" for name, ms in kt.items()
                                         if name in ("_fwd_kernel", "_dq_kernel"))
        finally:
            sp.TMA_GATHERS = True
    same = all(torch.equal(a, b) for a, b in zip(results[True], results[False]))
    print(f"stage 2 at {t // 1024}K, forward / backward ms (o and dq bit-identical: {same}):", flush=True)
    for tma in (True, False):
        print(f"  {'TMA' if tma else 'pointer loads'}: {', '.join(times[tma])}; gathers (ms): {kernels[tma]}",
              flush=True)


def window_ab(t: int) -> None:
    """Stage 2's forward at ``t`` tokens with the window kernel's tiles by TMA (``TMA_WINDOW``) against per-thread
    loads, alternating three times (launch configurations: ``--window-configs``)."""
    q, k, v, idx = _prefill_case(t)

    def fwd():
        return sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)

    outs, times, kernels = {}, {}, {}
    for n in range(6):
        tma = n % 2 == 0
        sp.TMA_WINDOW = tma
        try:
            outs.setdefault(tma, fwd()[0])
            times.setdefault(tma, []).append(f"{time_ms(fwd, False):.2f}")
            if n < 2:
                kernels[tma] = _kernel_times(fwd).get("_window_kernel", float("nan"))
        finally:
            sp.TMA_WINDOW = True
    print(f"stage 2 forward at {t // 1024}K, ms (o bit-identical: {torch.equal(outs[True], outs[False])}):",
          flush=True)
    for tma in (True, False):
        print(f"  window tiles by {'TMA' if tma else 'pointer loads'}: {', '.join(times[tma])}; window kernel "
              f"{kernels[tma]:.2f} ms", flush=True)


#: (num_warps, num_stages) of the window kernel with TMA; the committed pair first
WINDOW_CONFIGS = [(8, 3), (8, 2), (8, 4), (4, 3)]


def window_configs(t: int = 131072) -> None:
    """The window kernel's time (profiler) at ``t`` tokens for each of :data:`WINDOW_CONFIGS`, twice."""
    q, k, v, idx = _prefill_case(t)
    base = sp.LAUNCH["window"]
    ref = sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)[0]
    for config in WINDOW_CONFIGS * 2:
        sp.LAUNCH["window"] = config
        try:
            o = sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)[0]
            ms = _kernel_times(lambda: sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True))["_window_kernel"]
            print(f"  window {config}: {ms:.2f} ms (o equal: {torch.equal(o, ref)})", flush=True)
        except Exception as err:  # noqa: BLE001 - a configuration that does not compile or fit is reported
            print(f"  window {config}: {type(err).__name__}: {str(err)[:120]}", flush=True)
        finally:
            sp.LAUNCH["window"] = base


def keys_ab() -> None:
    """The selection (stage 1 + top-k) with the compressed-key tiles by TMA (``TMA_KEYS``) against per-thread
    loads: the 128K prefill (do_bench, with the normalizer and score kernels' CUDA time) and a decode query
    against a 128K cache (CUDA-graph replay), alternating three times; block scores compared bit for bit."""
    q, k, _ = _inputs(131072, 131072)
    c1 = compress_keys(k, SALA["kernel_size"], SALA["kernel_stride"])
    c2 = compress_keys(k, C2_FACTOR * SALA["kernel_size"], C2_FACTOR * SALA["kernel_stride"])
    geo = (SALA["block_size"], SALA["kernel_size"], SALA["kernel_stride"], 128 ** -0.5, False)
    for label, t_q in (("prefill 128K", 131072), ("decode at 128K", 1)):
        qq = q[:, -t_q:].contiguous()

        def scores(qq=qq):
            return sel.block_scores(qq, c1, c2, 131072, *geo, direct=True)

        def select(qq=qq):
            return sel._select(qq, c1, c2, 131072, *geo[:3], SALA["init_blocks"], SALA["local_blocks"],
                               SALA["topk"], *geo[3:], direct=True)

        outs, times = {}, {}
        for n in range(6):
            tma = n % 2 == 0
            sel.TMA_KEYS = tma
            try:
                with torch.no_grad():
                    outs.setdefault(tma, scores())
                    if t_q == 1:
                        times.setdefault(tma, []).append(f"{graph_time_ms(select, False) * 1e3:.1f} us")
                    else:
                        kt = _kernel_times(select)
                        stage1 = kt.get("_lse_kernel", 0.0) + kt.get("_score_kernel", 0.0)
                        times.setdefault(tma, []).append(f"{time_ms(select, False):.2f} ms (stage 1 kernels "
                                                         f"{stage1:.2f})")
            finally:
                sel.TMA_KEYS = True
        nb = outs[True].shape[-1]  # only the candidates are written: compare those
        bt = (131072 - t_q + torch.arange(t_q, device=q.device)) // SALA["block_size"]
        cand = torch.arange(nb, device=q.device)[None, :] <= bt[:, None]
        same = torch.equal(outs[True][:, cand], outs[False][:, cand])
        print(f"selection, {label} (block scores bit-identical: {same}):", flush=True)
        for tma in (True, False):
            print(f"  key tiles by {'TMA' if tma else 'pointer loads'}: {', '.join(times[tma])}", flush=True)
        torch.cuda.empty_cache()


def decode_ab(t: int) -> None:
    """Stage 2 of one decode step against a ``t``-token cache, TMA against per-thread loads (graph replays)."""
    with torch.no_grad():
        args = _decode_case(t)[6]
        outs, times = {}, {}
        for n in range(6):
            tma = n % 2 == 0
            sp.TMA_GATHERS = tma
            try:
                outs.setdefault(tma, sp._sparse_fwd(*args, direct=True)[0])
                times.setdefault(tma, []).append(
                    f"{graph_time_ms(lambda: sp._sparse_fwd(*args, direct=True), False) * 1e3:.1f}")
            finally:
                sp.TMA_GATHERS = True
    print(f"decode at {t // 1024}K, stage 2 graph replay us (bit-identical: {torch.equal(outs[True], outs[False])}): "
          f"TMA {', '.join(times[True])}; pointer loads {', '.join(times[False])}", flush=True)


#: (num_warps, num_stages) of the forward and dq gather kernels with TMA; the committed pair first
CONFIGS = [((4, 3), (4, 3)), ((2, 3), (2, 3)), ((4, 2), (4, 2)), ((2, 4), (2, 4))]


def configs(t: int = 131072) -> None:
    """Forward / backward of stage 2 at ``t`` tokens for each launch configuration of the TMA gather kernels,
    alternating twice, with the relative difference of o and dq from the committed configuration's."""
    q, k, v, idx = _prefill_case(t)
    do = torch.randn_like(q)
    base = (sp.LAUNCH["gather"], sp.LAUNCH["dq_gather"])
    ref, times, notes = None, {}, {}
    for n in range(2 * len(CONFIGS)):
        i = n % len(CONFIGS)
        sp.LAUNCH["gather"], sp.LAUNCH["dq_gather"] = CONFIGS[i]
        try:
            def fwd():
                return sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)

            o, lse = fwd()

            def bwd(o=o, lse=lse):
                return sp._sparse_bwd(q, k, v, idx, o, lse, do, *STAGE2, direct=True)

            dq = bwd()[0]
            ref = (o, dq) if ref is None else ref
            rel = [((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in zip((o, dq), ref)]
            notes[i] = f"rel. diff o {rel[0]:.0e}, dq {rel[1]:.0e}"
            times.setdefault(i, []).append(f"{time_ms(fwd, False):.2f} / {time_ms(bwd, False):.2f}")
        except Exception as err:  # noqa: BLE001 - a configuration that does not compile or fit is reported
            notes[i] = f"{type(err).__name__}: {str(err)[:120]}"
        finally:
            sp.LAUNCH["gather"], sp.LAUNCH["dq_gather"] = base
    print(f"stage 2 at {t // 1024}K with TMA gathers, forward / backward ms:", flush=True)
    for i, (gather, dq_gather) in enumerate(CONFIGS):
        print(f"  gather {gather}, dq gather {dq_gather}: {', '.join(times.get(i, []))} ({notes.get(i)})", flush=True)


def main() -> None:
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    if "--configs" in sys.argv:
        configs()
        return
    if "--keys" in sys.argv:
        keys_ab()
        return
    if "--window" in sys.argv:
        for t in (131072, 32768):
            window_ab(t)
            torch.cuda.empty_cache()
        window_configs()
        return
    if "--decode" not in sys.argv:
        for t in (131072, 32768):
            ab(t)
            torch.cuda.empty_cache()
    for t in (131072, 16384):
        decode_ab(t)


if __name__ == "__main__":
    main()
