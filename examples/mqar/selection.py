"""Where the SALA-style hybrid's sparse layer can look: for every MQAR query, is the block holding the
answer (the value after the queried key) visible to the InfLLM-V2 layer, as a forced block (init or local)
or as a selected one?

    python examples/mqar/selection.py runs/mqar/hybrid/fit/checkpoints/last [--seq-len 64] [--pairs 2 4 8 16]

Prints, per number of pairs, the share of queries whose answer block is forced, selected (by at least one
KV head), or not visible at all, beside the share that random picks among the free candidate blocks (one set
per KV head) would find.
"""

from __future__ import annotations

import argparse

import torch

import mixarch
from mixarch.data.mqar import MQARSplit, generate
from mixarch.data.segment import IGNORE_INDEX
from mixarch.mixers.infllm_v2 import InfLLMV2Attention
from mixarch.ops.infllm_v2 import infllm_v2_attention


def capture_indices(layer: InfLLMV2Attention, store: list) -> None:
    """Make ``layer`` record its selected blocks ``[B, Hkv, T, topk]`` on each call."""
    p = layer.params

    def attend(q, k, v, **compressed):
        o, idx = infllm_v2_attention(q, k, v, block_size=p.block_size, kernel_size=p.kernel_size,
                                     kernel_stride=p.kernel_stride, init_blocks=p.init_blocks,
                                     local_blocks=p.local_blocks, topk=p.topk, dense_len=p.dense_len,
                                     exact_normalizer=p.exact_normalizer, return_indices=True, **compressed)
        store.append(idx)
        return o

    layer.attend = attend


@torch.no_grad()
def visibility(model, layer: InfLLMV2Attention, seq_len: int, pairs: int, n: int = 256) -> dict[str, float]:
    seg = generate(MQARSplit(seq_len=seq_len, num_kv_pairs=pairs, num_examples=n), model.resolved.model.vocab_size,
                   seed=12345)
    store: list = []
    capture_indices(layer, store)
    model(seg.inputs)
    idx = store[-1]
    if idx is None:
        raise SystemExit(f"the sparse layer ran dense at {seq_len} tokens (dense_len {layer.params.dense_len})")
    p = layer.params
    counts = {"forced": 0, "selected": 0, "missed": 0, "random pick": 0.0}
    for b, t in (seg.labels != IGNORE_INDEX).nonzero().tolist():
        key = int(seg.inputs[b, t])
        answer = 2 * seg.inputs[b, :2 * pairs:2].tolist().index(key) + 1
        block, now = answer // p.block_size, t // p.block_size
        forced_set = {c for c in range(now + 1) if c < p.init_blocks or now - p.local_blocks <= c}
        candidates = now + 1 - len(forced_set)
        picks = max(0, min(p.topk, now + 1) - len(forced_set))
        chosen = (idx[b, :, t] == block).any().item()
        counts["forced" if block in forced_set else "selected" if chosen else "missed"] += 1
        if block not in forced_set:  # each KV head picks on its own
            counts["random pick"] += 1 - (1 - picks / candidates) ** idx.shape[1]
    total = counts["forced"] + counts["selected"] + counts["missed"]
    unforced = counts["selected"] + counts["missed"]
    return {"forced": counts["forced"] / total, "selected": counts["selected"] / total,
            "missed": counts["missed"] / total,
            "selected | not forced": counts["selected"] / unforced if unforced else float("nan"),
            "random pick | not forced": counts["random pick"] / unforced if unforced else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model directory (an export or `mixarch build --out`)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--pairs", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    model = mixarch.load(args.model).eval()
    layer = next(b.mixer for b in model.blocks if isinstance(b.mixer, InfLLMV2Attention))
    print("| pairs | answer block forced | selected | not visible | selected, of not forced | random pick, of not forced |")
    print("|---|---|---|---|---|---|")
    for pairs in args.pairs:
        v = visibility(model, layer, args.seq_len, pairs)
        print(f"| {pairs} | " + " | ".join(f"{x:.3f}" for x in v.values()) + " |")


if __name__ == "__main__":
    main()
