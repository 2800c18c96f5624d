"""Eager host overhead, same process: the Triton kernels launched directly (what eager calls do) against the same
kernels through the custom ops and ``wrap_triton`` (what traced calls use; eager calls did this before), forward
+ backward and forward alone. The A/B behind the "eager launches" paragraph of docs/benchmarks.md.

    python bench/eager_launch_ab.py            # Lightning (B=1, 32 heads of 128) and InfLLM-V2 stage 2 (32/2
                                               # heads, SALA blocks), bf16, T = 4K .. 128K; ~1 minute on an H200

Times: median ms of ``triton.testing.do_bench`` (bench/timing.py), each call's host work included.
"""

from __future__ import annotations

import torch
from timing import time_ms  # bench/timing.py (scripts run from bench/)

from mixarch.kernels.triton.infllm_v2 import sparse
from mixarch.kernels.triton.lightning import chunk, op
from mixarch.ops.infllm_v2 import infllm_v2_attention
from mixarch.ops.lightning import alibi_slopes

SALA = dict(block_size=64, kernel_size=32, kernel_stride=16, init_blocks=1, local_blocks=32, topk=96)


def _train(fn, leaves, do):
    def run():
        return torch.autograd.grad(fn(*leaves), leaves, do)
    return run


def lightning(t: int) -> str:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, t, 32, 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    decay = alibi_slopes(32).cuda()
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    do = torch.randn_like(q)
    args = (decay, None, None, 128 ** -0.5, chunk.CHUNK, chunk.segment_size(t, 32))
    direct = lambda *x: op.lightning_attention(*x, decay)[0]  # noqa: E731
    custom = lambda *x: op._fwd_op(*x, *args)[0]  # noqa: E731
    times = [time_ms(_train(f, leaves, do), False) for f in (direct, custom)]
    with torch.no_grad():
        times += [time_ms(lambda f=f: f(q, k, v), False) for f in (direct, custom)]
    return (f"| Lightning | {t // 1024}K | {times[0]:.3f} | {times[1]:.3f} | {times[1] / times[0]:.2f}x | "
            f"{times[2]:.3f} | {times[3]:.3f} |")


def infllm(t: int) -> str:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, t, 32, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn(1, t, 2, 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    with torch.no_grad():
        _, idx = infllm_v2_attention(q, k, v, **SALA, dense_len=0, exact_normalizer=False, return_indices=True)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    do = torch.randn_like(q)
    direct = lambda *x: sparse.triton_sparse_block_attention(*x, idx, block_size=64, init_blocks=1,  # noqa: E731
                                                             local_blocks=32)
    custom = lambda *x: sparse.sparse_fwd_op(*x, idx, 64, 128 ** -0.5, 1, 32)[0]  # noqa: E731
    times = [time_ms(_train(f, leaves, do), False) for f in (direct, custom)]
    with torch.no_grad():
        times += [time_ms(lambda f=f: f(q, k, v), False) for f in (direct, custom)]
    return (f"| InfLLM-V2 stage 2 | {t // 1024}K | {times[0]:.3f} | {times[1]:.3f} | {times[1] / times[0]:.2f}x | "
            f"{times[2]:.3f} | {times[3]:.3f} |")


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/eager_launch_ab.py needs a CUDA GPU")
    props = torch.cuda.get_device_properties(0)
    import triton

    print(f"card: {props.name}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    print("| op | T | fwd+bwd, direct (ms) | fwd+bwd, custom ops | ratio | fwd, direct | fwd, custom ops |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)
    for t in (4096, 16384, 32768, 131072):
        print(lightning(t), flush=True)
    for t in (4096, 16384, 32768):
        print(infllm(t), flush=True)


if __name__ == "__main__":
    main()
