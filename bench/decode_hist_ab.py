"""InfLLM-V2 decode: the top-k search started from the score kernel's bucket counts (``select.DECODE_HIST``) against
the plain 32-probe bisection, in one process on one CUDA GPU, alternating.

    python bench/decode_hist_ab.py

Shapes as bench/infllm_v2.py (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, C2 normalizer, sparse path):
one query against a 16K and a 128K cache. Per setting, three times each: the selection alone and the whole decode
step (select + stage 2) as CUDA-graph replays, and whether the indices equal the other setting's.
"""

from __future__ import annotations

import os

import torch
from infllm_v2_profile import SALA, _decode_case  # bench/ (the script directory is on sys.path)
from timing import graph_time_ms

import mixarch.kernels.triton.infllm_v2.select as sel
from mixarch.kernels import KERNELS_ENV
from mixarch.ops.infllm_v2 import infllm_v2_attention


def decode(t: int) -> None:
    q, k, v, c1, c2, _, _ = _decode_case(t)
    geo = {n: SALA[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk")}

    def select():
        return sel._select(q, c1, c2, t, geo["block_size"], geo["kernel_size"], geo["kernel_stride"],
                           geo["init_blocks"], geo["local_blocks"], geo["topk"], q.shape[-1] ** -0.5, False,
                           direct=True)

    def step():
        return infllm_v2_attention(q, k, v, **SALA, dense_len=0, exact_normalizer=False, compressed_k=c1,
                                   compressed_k2=c2)

    with torch.no_grad():
        picked = {}
        for on in (False, True):
            sel.DECODE_HIST = on
            picked[on] = select()
        print(f"decode {t // 1024}K: indices equal: {torch.equal(picked[False], picked[True])}", flush=True)
        for on in (False, True) * 3:
            sel.DECODE_HIST = on
            print(f"decode {t // 1024}K, DECODE_HIST={on}: select {graph_time_ms(select, False) * 1e3:.1f} us, "
                  f"step {graph_time_ms(step, False) * 1e3:.1f} us", flush=True)
    sel.DECODE_HIST = True


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/decode_hist_ab.py needs a CUDA GPU")
    os.environ[KERNELS_ENV] = "infllm_v2_select=triton,infllm_v2_sparse_attention=triton"
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in (16384, 131072):
        decode(t)


if __name__ == "__main__":
    main()
