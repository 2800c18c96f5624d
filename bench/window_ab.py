"""InfLLM-V2 stage 2: blocks per key tile of the window kernels (``WINDOW_STEP``) and their launch
configurations, same process.

    python bench/window_ab.py

Stage 2 as the layer calls it (told the forced blocks: the 34 forced blocks as dense window tiles, the free ones
gathered) at T = 128K and 32K (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, the blocks of the real
selection): do_bench medians of the forward and of the backward, variants alternating; every variant's o and dq
against the committed variant's (relative difference: a different key tiling rounds differently).
"""

from __future__ import annotations

import torch
from infllm_v2_profile import STAGE2, _prefill_case  # bench/ (the script directory is on sys.path)
from timing import time_ms

import mixarch.kernels.triton.infllm_v2.sparse as sp

#: (WINDOW_STEP, LAUNCH["window"], LAUNCH["dq_window"]); the committed variant first
VARIANTS = [({"fwd": 2, "dq": 1}, (8, 3), (8, 2)), ({"fwd": 1, "dq": 1}, (8, 3), (8, 2)),
            ({"fwd": 2, "dq": 2}, (8, 3), (8, 2)), ({"fwd": 2, "dq": 1}, (8, 2), (8, 2))]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def ab(t: int) -> None:
    """Time and compare the variants at ``t`` tokens."""
    q, k, v, idx = _prefill_case(t)
    do = torch.randn_like(q)

    def fwd():
        return sp._sparse_fwd(q, k, v, idx, *STAGE2, direct=True)

    base = (dict(sp.WINDOW_STEP), sp.LAUNCH["window"], sp.LAUNCH["dq_window"])
    ref, times, notes = None, {}, {}
    for n, (steps, window, dq_window) in enumerate(VARIANTS * 2):
        variant = n % len(VARIANTS)
        sp.WINDOW_STEP, sp.LAUNCH["window"], sp.LAUNCH["dq_window"] = dict(steps), window, dq_window
        try:
            o, lse = fwd()

            def bwd(o=o, lse=lse):
                return sp._sparse_bwd(q, k, v, idx, o, lse, do, *STAGE2, direct=True)

            dq = bwd()[0]
            ref = (o, dq) if ref is None else ref
            notes[variant] = f"rel. diff o {_rel(o, ref[0]):.0e}, dq {_rel(dq, ref[1]):.0e}"
            times.setdefault(variant, []).append(f"{time_ms(fwd, False):.2f} / {time_ms(bwd, False):.2f}")
        except Exception as err:  # noqa: BLE001 - a variant that does not compile or fit is reported
            notes[variant] = f"{type(err).__name__}: {str(err)[:120]}"
        finally:
            sp.WINDOW_STEP, sp.LAUNCH["window"], sp.LAUNCH["dq_window"] = dict(base[0]), base[1], base[2]
    print(f"stage 2 at {t // 1024}K, forward / backward ms:", flush=True)
    for i, (steps, window, dq_window) in enumerate(VARIANTS):
        print(f"  WINDOW_STEP={steps} window {window} dq_window {dq_window}: {', '.join(times.get(i, []))} "
              f"({notes.get(i)})", flush=True)


def main() -> None:
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for t in (131072, 32768):
        ab(t)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
