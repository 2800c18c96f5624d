"""InfLLM-V2 decode: the score kernel's first key tile before its PDL wait (``select.EARLY_SCORES``) on and off,
in one process on one CUDA GPU, alternating.

    python bench/early_scores_ab.py [--lengths 16384 131072]

Shapes as bench/infllm_v2.py (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, C2 normalizer): one query
against a 16K and a 128K cache, C1 / C2 keys precomputed; the decode op ``infllm_v2_decode`` (Triton). First the
check that both settings give the same blocks and output bit for bit; then CUDA-graph replays, three times each
way; then the kernels of one eager call each way under torch.profiler (with PDL a kernel's span includes its wait
for the kernel before).
"""

from __future__ import annotations

import argparse

import torch
from infllm_v2_profile import (  # bench/ (the script directory is on sys.path)
    SALA,
    _decode_case,
    _kernel_times,
)
from timing import graph_time_ms

from mixarch.kernels.triton.infllm_v2 import decode, select

GEO = {n: SALA[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk")}


def run(t: int) -> None:
    q, k, v, c1, c2, _, _ = _decode_case(t)

    def step():
        return decode.triton_infllm_v2_decode(q, k, v, c1, c2, **GEO, scale=q.shape[-1] ** -0.5,
                                              exact_normalizer=False)

    def setting(early: bool):
        select.EARLY_SCORES = early
        return step

    with torch.no_grad():
        (o_on, sel_on), (o_off, sel_off) = setting(True)(), setting(False)()
        same = torch.equal(o_on, o_off) and torch.equal(sel_on, sel_off)
        print(f"decode {t // 1024}K: output and blocks equal both ways: {same}", flush=True)
        if not same:
            raise SystemExit("EARLY_SCORES changes the result")
        for _ in range(3):
            line = [f"{label} {graph_time_ms(setting(early), False) * 1e3:.1f}"
                    for label, early in (("early", True), ("after the wait", False))]
            print(f"decode {t // 1024}K graph replay (us): " + ", ".join(line), flush=True)
        for label, early in (("early", True), ("after the wait", False)):
            kernels = ", ".join(f"{n[:24]} {ms * 1e3:.1f}" for n, ms in
                                sorted(_kernel_times(setting(early)).items(), key=lambda x: -x[1]))
            print(f"decode {t // 1024}K kernels, {label} (us, eager): {kernels}", flush=True)
    select.EARLY_SCORES = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 131072])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/early_scores_ab.py needs a CUDA GPU")
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in args.lengths:
        run(t)


if __name__ == "__main__":
    main()
