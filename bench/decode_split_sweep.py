"""InfLLM-V2 decode, stage 2: how many programs split a (query, KV head)'s slots, same process.

    python bench/decode_split_sweep.py

One query against a 128K (and 16K) cache (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, the blocks of the
real selection): CUDA-graph replay of stage 2's forward (the slot-split ``_fwd_kernel`` plus ``_combine_kernel``)
with the split count the launch heuristic would pick on a card of N multiprocessors (``2 * N / (B * Hkv)``
programs per pair, at least ``SPLIT_SLOTS`` slots each), N from the card's own count down, and with 2 instead of
3 as ``SPLIT_SLOTS``. Every variant's output must
equal the committed one's up to fp32 rounding of the merge.
"""

from __future__ import annotations

import torch
from infllm_v2_profile import _decode_case  # bench/ (the script directory is on sys.path)
from timing import graph_time_ms

import mixarch.kernels.triton.infllm_v2.sparse as sp

_NUM_SMS, _SPLIT_SLOTS = sp.num_sms, sp.SPLIT_SLOTS


def main() -> None:
    card = torch.cuda.get_device_properties(0)
    print(f"card: {card.name}, torch {torch.__version__}", flush=True)
    with torch.no_grad():
        for t in (131072, 16384):
            fwd_args = _decode_case(t)[6]
            ref = sp._sparse_fwd(*fwd_args, direct=True)[0].float()
            cells = []
            n = card.multi_processor_count
            for sms, min_slots in ((n, 3), (n, 2), (64, 3), (64, 2), (32, 3), (16, 3), (n, 3), (n, 2)):
                sp.num_sms, sp.SPLIT_SLOTS = (lambda _dev, sms=sms: sms), min_slots
                try:
                    o = sp._sparse_fwd(*fwd_args, direct=True)[0].float()
                    err = ((o - ref).norm() / ref.norm()).item()
                    us = graph_time_ms(lambda a=fwd_args: sp._sparse_fwd(*a, direct=True), False) * 1e3
                    cells.append(f"N={sms} SPLIT_SLOTS={min_slots}: {us:.1f} us (rel. diff {err:.0e})")
                finally:
                    sp.num_sms, sp.SPLIT_SLOTS = _NUM_SMS, _SPLIT_SLOTS
            print(f"decode {t // 1024}K stage 2: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
