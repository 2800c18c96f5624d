"""InfLLM-V2 stage 1 (normalizer, block scores, top-k) under other tile sizes and launch configurations of its
two stage-1 kernels (``STAGE1`` in mixarch.kernels.triton.infllm_v2.select), same process.

    python bench/select_sweep.py

The selection of bench/infllm_v2.py's layer (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, C2
normalizer): the 128K prefill (do_bench median) and one decode query against a 128K cache (CUDA-graph replay),
variants alternating, each twice. Other key tiles sum the normalizer in another order, so a variant's indices
may differ from the committed ones at near-ties: the share of differing rows is printed.
"""

from __future__ import annotations

import torch
from infllm_v2_profile import SALA, _decode_case, _inputs  # bench/ (the script directory is on sys.path)
from timing import graph_time_ms, time_ms

import mixarch.kernels.triton.infllm_v2.select as sel
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

#: STAGE1 variants: (rows, keys, keys_split, warps, stages); the committed one first. Measured on an H200
#: (2026-11-27) besides these: keys 256 (prefill 27.7 ms), rows 256 at 8 or 16 warps (32.8, 26.1 ms), rows 64 at 4
#: warps (27.4 ms), keys 128 at 3 stages (27.3 ms), against 23.7 ms committed
VARIANTS = [(128, 128, 64, None, 2), (128, 64, 64, None, 2), (128, 128, 128, None, 2), (128, 64, 64, 8, 3),
            (128, 64, 64, 4, 2), (128, 32, 32, 8, 2)]


def sweep(label: str, select_args: tuple, graph: bool) -> None:
    base = dict(sel.STAGE1)
    ref, times, notes = None, {}, {}
    for n, (rows, keys, keys_split, warps, stages) in enumerate(VARIANTS * 2):
        i = n % len(VARIANTS)
        sel.STAGE1.update(rows=rows, keys=keys, keys_split=keys_split, warps=warps, stages=stages)
        try:
            idx = sel._select(*select_args, direct=True)
            ref = idx if ref is None else ref
            notes[i] = f"rows differing {(idx != ref).any(-1).float().mean().item():.1e}"

            def call():
                return sel._select(*select_args, direct=True)

            ms = graph_time_ms(call, False) if graph else time_ms(call, False)
            times.setdefault(i, []).append(f"{ms * 1e3:.1f} us" if graph else f"{ms:.2f} ms")
        except Exception as err:  # noqa: BLE001 - a variant that does not compile or fit is reported
            notes[i] = f"{type(err).__name__}: {str(err)[:120]}"
        finally:
            sel.STAGE1.clear()
            sel.STAGE1.update(base)
    print(f"{label}:", flush=True)
    for i, variant in enumerate(VARIANTS):
        print(f"  rows, keys, keys_split, warps, stages = {variant}: {' / '.join(times.get(i, []))} ({notes.get(i)})", flush=True)


def main() -> None:
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    with torch.no_grad():
        sweep("decode 128K (graph replay of the selection)", _decode_case(131072)[5], True)
        q, k, _ = _inputs(131072, 131072)
        c1 = compress_keys(k, SALA["kernel_size"], SALA["kernel_stride"])
        c2 = compress_keys(k, C2_FACTOR * SALA["kernel_size"], C2_FACTOR * SALA["kernel_stride"])
        sweep("prefill 128K (selection, do_bench)", (q, c1, c2, 131072, SALA["block_size"], SALA["kernel_size"],
                                                      SALA["kernel_stride"], SALA["init_blocks"],
                                                      SALA["local_blocks"], SALA["topk"], 128 ** -0.5, False), False)


if __name__ == "__main__":
    main()
