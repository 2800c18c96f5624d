"""Programmatic dependent launch (PDL) on and off, in one process on one CUDA GPU (sm_90+), alternating.

    python bench/pdl_ab.py              # decode step at 128K, then the layer forward at 128K and 32K

Shapes as bench/infllm_v2.py (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, C2 normalizer, sparse path).

1. Decode step (select + stage 2, one query against a 128K cache): eager host time per step (300 calls after 30
   untimed ones, synchronized) and CUDA-graph replay time, ``MIXARCH_PDL=0`` / ``1`` three times each.
2. Layer forward (``triton.testing.do_bench``, short runs) at 128K and 32K, ``MIXARCH_PDL=1`` / ``0`` three
   times each.

Run on an H200 on 2026-11-27 (docs/benchmarks.md, InfLLM-V2, the PDL re-run) as two on-card scripts of this
content; the decode part then used an intermediate build whose modes were named ``0`` / ``always`` / ``capture``
(``always`` is today's ``1``; ``capture``, PDL only while a graph is captured, was dropped).
"""

from __future__ import annotations

import os

import torch
from infllm_v2_profile import SALA, _decode_case, _inputs  # bench/ (the script directory is on sys.path)
from timing import graph_time_ms, host_us, time_ms

from mixarch.kernels import KERNELS_ENV
from mixarch.kernels.triton.pdl import ENV as PDL_ENV
from mixarch.ops.infllm_v2 import infllm_v2_attention


def decode(t: int) -> None:
    q, k, v, c1, c2, _, _ = _decode_case(t)

    def step():
        return infllm_v2_attention(q, k, v, **SALA, dense_len=0, exact_normalizer=False, compressed_k=c1,
                                   compressed_k2=c2)

    with torch.no_grad():
        for mode in ("0", "1") * 3:
            os.environ[PDL_ENV] = mode
            host = host_us(step, warmup=30)
            print(f"decode {t // 1024}K, PDL={mode}: eager {host:.1f} us/step (host-bound), "
                  f"graph {graph_time_ms(step, False) * 1e3:.1f} us", flush=True)


def prefill(t: int) -> None:
    q, k, v = _inputs(t, t)
    with torch.no_grad():
        for mode in ("1", "0") * 3:
            os.environ[PDL_ENV] = mode
            ms = time_ms(lambda: infllm_v2_attention(q, k, v, **SALA, dense_len=0, exact_normalizer=False), True)
            print(f"layer forward {t // 1024}K, PDL={mode}: {ms:.2f} ms", flush=True)


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/pdl_ab.py needs a CUDA GPU")
    os.environ[KERNELS_ENV] = "infllm_v2_select=triton,infllm_v2_sparse_attention=triton"
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    decode(131072)
    for t in (131072, 32768):
        prefill(t)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
