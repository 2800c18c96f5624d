"""InfLLM-V2 decode: the decode op (``infllm_v2_decode``: stage 1, the top-k by rank counting, stage 2 over the
rank-ordered selection) against the two ops select (bisection top-k from the bucket counts) + stage 2, in one
process on one CUDA GPU, alternating; blocks per ranking program (``decode.OWN``).

    python bench/decode_rank_ab.py [--own 2 4 8] [--lengths 16384 131072]

Shapes as bench/infllm_v2.py (B = 1, Hq = 32, Hkv = 2, D = 128, bf16, SALA geometry, C2 normalizer, sparse path):
one query against a 16K and a 128K cache, C1 / C2 keys precomputed. First the check: the decode op's blocks equal
the two-op selection's and its output matches within bf16 rounding. Then, three times each, CUDA-graph replays of
the two-op step, the decode op per setting, and SDPA over the whole cache (torch's default backend, and flash as
bench/infllm_v2.py times it); the host time of eager calls (synchronized wall clock over 300 calls), also of the
layer function's decode step through the dispatcher (the decode op, or the two ops when it is asked for the
indices); the kernels of one eager call of each under torch.profiler.
"""

from __future__ import annotations

import argparse

import torch
from infllm_v2_profile import (  # bench/ (the script directory is on sys.path)
    SALA,
    _decode_case,
    _kernel_times,
)
from timing import graph_time_ms, host_us
from torch.nn.attention import SDPBackend, sdpa_kernel

from mixarch.kernels.triton.infllm_v2 import decode
from mixarch.kernels.triton.infllm_v2.select import triton_infllm_v2_select
from mixarch.kernels.triton.infllm_v2.sparse import triton_sparse_block_attention
from mixarch.ops.infllm_v2 import infllm_v2_attention
from mixarch.ops.infllm_v2.attention import selection_mask, stage2_forcing

DEFAULTS = dict(OWN=decode.OWN)
GEO = {n: SALA[n] for n in ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk")}


def run(t: int, variants: list[dict]) -> None:
    q, k, v, c1, c2, _, _ = _decode_case(t)
    args = dict(**GEO, scale=q.shape[-1] ** -0.5, exact_normalizer=False)
    forcing = stage2_forcing(GEO["init_blocks"], GEO["local_blocks"], GEO["topk"])

    def two_op():
        idx = triton_infllm_v2_select(q, c1, c2, t, **args)
        return triton_sparse_block_attention(q, k, v, idx, block_size=GEO["block_size"], scale=args["scale"],
                                             **forcing), idx

    def decode_op():
        return decode.triton_infllm_v2_decode(q, k, v, c1, c2, **args)

    def layer(**kw):
        return infllm_v2_attention(q, k, v, **GEO, dense_len=0, exact_normalizer=False, compressed_k=c1,
                                   compressed_k2=c2, **kw)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                v.transpose(1, 2), enable_gqa=True)

    def sdpa_flash():  # the baseline, as bench/infllm_v2.py times it
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return sdpa()

    def name(setting: dict) -> str:
        return f"decode op, OWN={setting['OWN']}"

    with torch.no_grad():
        o_ref, idx = two_op()
        for setting in variants:
            _set(setting)
            o, selected = decode_op()
            same = torch.equal(selected, selection_mask(idx, selected.shape[-1]))
            err = ((o.float() - o_ref.float()).norm() / o_ref.float().norm()).item()
            print(f"decode {t // 1024}K, {name(setting)}: blocks equal: {same}, relative RMSE to the two-op output: "
                  f"{err:.2e}", flush=True)
            if not same or err > 5e-3:
                raise SystemExit("the decode op differs from the two-op path")
        cases = {"two-op": two_op, **{name(setting): setting for setting in variants}, "sdpa (default backend)": sdpa,
                 "sdpa (flash)": sdpa_flash}
        for _ in range(3):
            line = [f"{label} {graph_time_ms(_chosen(case, decode_op), False) * 1e3:.1f}"
                    for label, case in cases.items()]
            print(f"decode {t // 1024}K graph replay (us): " + ", ".join(line), flush=True)
        _set(DEFAULTS)
        hosts = {**cases, "layer (decode op)": layer, "layer with indices (two ops)": lambda: layer(return_indices=True)}
        for _ in range(2):
            line = [f"{label} {host_us(_chosen(case, decode_op)):.1f}" for label, case in hosts.items()]
            print(f"decode {t // 1024}K host time per eager call (us): " + ", ".join(line), flush=True)
        for label, case in cases.items():
            kernels = ", ".join(f"{n[:28]} {ms * 1e3:.1f}" for n, ms in
                                sorted(_kernel_times(_chosen(case, decode_op)).items(), key=lambda x: -x[1]))
            print(f"decode {t // 1024}K kernels of {label} (us, eager): {kernels}", flush=True)


def _set(setting: dict) -> None:
    for attr, value in setting.items():
        setattr(decode, attr, value)


def _chosen(case, decode_op):
    """The call of a case: the function itself, or the decode op with a setting of the decode module."""
    if isinstance(case, dict):
        _set(case)
        return decode_op
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--own", type=int, nargs="+", default=[2, 4, 8],
                        help="blocks per ranking program (powers of 2)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 131072])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/decode_rank_ab.py needs a CUDA GPU")
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    variants = [dict(OWN=own) for own in args.own]
    for t in args.lengths:
        run(t, variants)


if __name__ == "__main__":
    main()
