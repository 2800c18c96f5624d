"""InfLLM-V2 top-k threshold search: int64 keys, int32 keys, int32 keys with the early stop (and the decode row's
warps), same process.

    python bench/topk_ab.py

Block scores from the real stage 1 (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, C2 normalizer):
decode rows at 128K and 16K (CUDA-graph replay of the top-k launch alone) and the 128K prefill (do_bench).
Every variant must give the committed variant's indices.
"""

from __future__ import annotations

import torch
from infllm_v2_profile import SALA, _decode_case, _inputs  # bench/ (the script directory is on sys.path)
from timing import graph_time_ms, time_ms

import mixarch.kernels.triton.infllm_v2.select as sel
from mixarch.ops.infllm_v2 import C2_FACTOR, compress_keys

_LAUNCH, _COMMITTED = sel.launch, (sel.TOPK_KEY32, sel.TOPK_EARLY, None)


def _scores(select_args) -> dict:
    """The block scores, output buffer and arguments the selection hands to ``topk_blocks``."""
    got = {}
    orig = sel.topk_blocks

    def spy(scores, out, *args, **kwargs):
        got.update(scores=scores, out=out, args=args)
        return orig(scores, out, *args, **kwargs)

    sel.topk_blocks = spy
    try:
        sel._select(*select_args, direct=True)
    finally:
        sel.topk_blocks = orig
    return got


def _configure(key32: bool, early: bool, warps: int | None) -> None:
    """int32 or int64 keys, the early stop; the top-k launched with ``warps`` warps (None: the committed choice)."""
    sel.TOPK_KEY32, sel.TOPK_EARLY = key32, early
    sel.launch = _LAUNCH if warps is None else (lambda _w, stages, pdl=None: _LAUNCH(warps, stages, pdl))


def ab(label: str, got: dict, graph: bool) -> None:
    scores, out, args = got["scores"], got["out"], got["args"]
    variants = [(False, False, None), (True, False, None), (True, True, None)]
    variants += [(True, True, 2), (True, True, 8)] if graph else []
    outs, times = {}, {}
    for variant in variants * 2:  # alternating, twice
        _configure(*variant)
        o = torch.full_like(out, -7)

        def call(o=o):
            return sel.topk_blocks(scores, o, *args, direct=True)

        call()
        torch.cuda.synchronize()
        outs.setdefault(variant, o.clone())
        us = (graph_time_ms(call, False) if graph else time_ms(call, False)) * 1e3
        times.setdefault(variant, []).append(us)
    _configure(*_COMMITTED)
    ref = outs[_COMMITTED]
    cells = "; ".join(f"{'int32' if k else 'int64'} keys{', early stop' if e else ''}"
                      f"{'' if w is None else f', {w} warps'}: {'/'.join(f'{t:.1f}' for t in ts)} us"
                      for (k, e, w), ts in times.items())
    print(f"{label}: equal={all(torch.equal(o, ref) for o in outs.values())}; {cells}", flush=True)


def main() -> None:
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    with torch.no_grad():
        for t in (131072, 16384):
            ab(f"decode {t // 1024}K (graph replay)", _scores(_decode_case(t)[5]), True)
        q, k, v = _inputs(131072, 131072)
        c1 = compress_keys(k, SALA["kernel_size"], SALA["kernel_stride"])
        c2 = compress_keys(k, C2_FACTOR * SALA["kernel_size"], C2_FACTOR * SALA["kernel_stride"])
        select_args = (q, c1, c2, 131072, SALA["block_size"], SALA["kernel_size"], SALA["kernel_stride"],
                       SALA["init_blocks"], SALA["local_blocks"], SALA["topk"], 128 ** -0.5, False)
        ab("prefill 128K (eager)", _scores(select_args), False)


if __name__ == "__main__":
    main()
