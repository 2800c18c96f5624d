"""Where the decode top-k's time goes: ``_topk_kernel`` on the block scores of a decode step at 128K (B = 1,
Hkv = 2, SALA geometry, bench/infllm_v2.py's inputs), as the committed kernel and as variants cut down step by step,
each a CUDA-graph replay of the one launch (the variants' indices are wrong by design; timing only).

    python bench/topk_dissect.py

Variants (source edits of the committed kernel, written to a temporary module): ``full`` (committed, with the
bucket counts), ``no-hist`` (the plain bisection), ``no-search`` (no probe loop: the threshold is the bucket's
lower bound), ``no-search-no-compact`` (also no tie ranking or prefix-sum compaction: the kept flags' block
indices stored in place), ``load-store`` (load the scores, store the first ``topk`` of them as indices).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import tempfile

import torch
from infllm_v2_profile import SALA, _decode_case  # bench/ (the script directory is on sys.path)
from timing import graph_time_ms

import mixarch.kernels.triton.infllm_v2.select as sel
from mixarch.kernels.triton import pow2

SEARCH = "    while n_open > 0:"
COMPACT = "    above = key > kth[:, None]"


def _variant(name: str, edit) -> object:
    src = inspect.getsource(sel._topk_kernel.fn if hasattr(sel._topk_kernel, "fn") else sel._topk_kernel)
    src = edit(src)
    header = ("import triton\nimport triton.language as tl\nfrom mixarch.kernels.triton.infllm_v2.select import *\n"
              "from mixarch.kernels.triton.infllm_v2.select import _order_key\n"
              "from mixarch.kernels.triton.pdl import pdl_handoff\n\n")
    path = tempfile.NamedTemporaryFile("w", suffix=f"_{name.replace('-', '_')}.py", delete=False)
    path.write(header + src)
    path.close()
    spec = importlib.util.spec_from_file_location(f"topk_{name.replace('-', '_')}", path.name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod._topk_kernel


def _no_search(src: str) -> str:
    start = src.index(SEARCH)
    end = src.index("    kth = lo.to(tl.int32)")
    return src[:start] + src[end:]


def _no_compact(src: str) -> str:
    src = _no_search(src)
    start = src.index(COMPACT)
    return src[:start] + ("    sel = key >= kth[:, None]\n"
                          "    tl.store(out_ptr + base[:, None] * TOPK + blk[None, :] % TOPK, blk[None, :].to(tl.int64),\n"
                          "             mask=sel & row_ok[:, None])\n")


def _load_store(src: str) -> str:
    start = src.index("    forced = ")
    return src[:start] + ("    tl.store(out_ptr + base[:, None] * TOPK + blk[None, :], x.to(tl.int64),\n"
                          "             mask=row_ok[:, None] & (blk[None, :] < TOPK))\n")


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/topk_dissect.py needs a CUDA GPU")
    t = 131072
    q, k, v, c1, c2, select_args, _ = _decode_case(t)
    b, hkv = 1, c1.shape[2]
    hist = torch.empty((b * hkv, sel.N_BUCKETS.value), dtype=torch.int32, device="cuda")
    with torch.no_grad():
        scores = sel.block_scores(*select_args[:3], t, *select_args[4:7], select_args[10], False, direct=True,
                                  hist=hist, forcing=(SALA["init_blocks"], SALA["local_blocks"]))
    nb, topk = scores.shape[2], SALA["topk"]
    out = torch.empty((b, hkv, 1, topk), dtype=torch.int64, device="cuda")
    variants = {"full": sel._topk_kernel, "no-hist": sel._topk_kernel,
                "no-search": _variant("no-search", _no_search),
                "no-search-no-compact": _variant("no-search-no-compact", _no_compact),
                "load-store": _variant("load-store", _load_store)}
    nbp = pow2(nb, 16)
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}; decode at {t // 1024}K, {nb} blocks, "
          f"top-{topk}", flush=True)
    for _ in range(3):
        for name, kernel in variants.items():
            h = None if name == "no-hist" else hist

            def run(kernel=kernel, h=h):
                kernel[(1, b * hkv)](scores, scores if h is None else h, out, 1, t, nb, SALA["init_blocks"],
                                     SALA["local_blocks"], 0, 1, BLOCK=SALA["block_size"], TOPK=topk,
                                     TOPKP=pow2(topk), BR=1, NBP=nbp, HIST=h is not None, PDL=False, num_warps=4,
                                     num_stages=1)
            print(f"  {name}: {graph_time_ms(run, False) * 1e3:.2f} us", flush=True)
    empty = torch.empty(1, device="cuda")
    print(f"  (an empty graph-replayed fill of one element: {graph_time_ms(lambda: empty.fill_(1.0), False) * 1e3:.2f} us)")


if __name__ == "__main__":
    main()
