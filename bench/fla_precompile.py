"""Compile fla's autotune configs for the calls ``bench/lightning.py`` makes, in N processes at once.

fla autotunes dozens of configs per kernel at its first call and Triton compiles them one after another: on a fresh
machine that took longer than two 4-minute attempts at the benchmark. Here each process keeps every N-th config of
every autotuned kernel and makes the benchmark's fla calls (chunk_simple_gla forward + backward, dense with states,
packed, stateless; fused_recurrent_simple_gla decode at B = 1 and 64); the binaries land in the shared Triton disk
cache, so the benchmark's own autotuning only loads and times them (14 processes: 77 s on an H200 host's 16 cores).

    python bench/fla_precompile.py [N]      # then: python bench/lightning.py
"""

from __future__ import annotations

import subprocess
import sys
import time


def worker(i: int, n: int) -> None:
    """Process ``i`` of ``n``: keep configs ``i, i + n, ...`` (at least the first) of every autotuner, run the calls."""
    from triton.runtime import autotuner

    orig = autotuner.Autotuner.__init__

    def init(self, fn, arg_names, configs, *a, **k):
        mine = [c for j, c in enumerate(configs) if j % n == i] or list(configs[:1])
        orig(self, fn, arg_names, mine, *a, **k)
    autotuner.Autotuner.__init__ = init
    import torch
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla

    H, D, T = 32, 128, 4096  # bench/lightning.py's heads, head dim and gate length
    g = torch.Generator(device="cuda").manual_seed(0)
    decay = torch.rand(H, device="cuda") * 0.5

    def mk(*shape):
        return torch.randn(*shape, device="cuda", generator=g).bfloat16().requires_grad_()
    for cu, state in ((None, True), (torch.tensor([0, 1, 2, 1000, 4096], device="cuda"), True), (None, False)):
        q, k, v = mk(1, T, H, D), mk(1, T, H, D), mk(1, T, H, D)
        n_seq = 1 if cu is None else cu.numel() - 1
        h0 = torch.randn(n_seq, H, D, D, device="cuda", generator=g).requires_grad_() if state else None
        o, ht = chunk_simple_gla(q, k, v, g_gamma=-decay, scale=D ** -0.5, initial_state=h0,
                                 output_final_state=state, cu_seqlens=cu)
        loss = o.float().sum() + (ht.sum() if ht is not None else 0)
        loss.backward()
    with torch.no_grad():
        for b in (1, 64):
            q, k, v = (torch.randn(b, 1, H, D, device="cuda").bfloat16() for _ in range(3))
            fused_recurrent_simple_gla(q, k, v, g_gamma=-decay, scale=D ** -0.5,
                                       initial_state=torch.randn(b, H, D, D, device="cuda"), output_final_state=True)
    torch.cuda.synchronize()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 14
    start = time.time()
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(i), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(n)]
    failed = 0
    for i, p in enumerate(procs):
        out, _ = p.communicate()
        if p.returncode:
            failed += 1
            print(f"worker {i} failed ({p.returncode}): {out[-800:]}", flush=True)
    print(f"fla precompile: {n} workers, {time.time() - start:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
