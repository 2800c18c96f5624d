"""torch.compile sees what each Triton kernel (InfLLM-V2, Lightning) writes: torch's mutation analysis of the
kernels (the TTIR walk that decides which tensors a ``wrap_triton`` call mutates) must find only the kernel's
outputs. Where it cannot tell, it counts every pointer as written, and compiling a layer whose inputs require
grad then fails (functionalization copies "mutated" leaves back). The analysis compiles to TTIR for an sm_90
target, which needs the kernels defined outside the interpreter: it runs in a subprocess without
``TRITON_INTERPRET``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: pointer arguments that are inputs of their kernel and must never count as written
INPUTS = {"q_ptr", "k_ptr", "v_ptr", "c_ptr", "do_ptr", "idx_ptr", "s_ptr", "csr_q_ptr", "blk_off_ptr",
          "item_off_ptr", "item_blk_ptr"}
#: kernels whose ``o_ptr`` / ``lse_ptr`` are the forward's results, read by the backward
BACKWARD = {"_dq_window_kernel", "_dq_kernel", "_dkv_window_kernel", "_dkv_kernel"}

PROBE = r'''
import inspect, json, torch, triton
from triton.backends.compiler import GPUTarget
import torch._higher_order_ops.triton_kernel_wrap as wrap
if not torch.cuda.is_available():
    class _Sm90:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)
    triton.runtime.driver.set_active(_Sm90())
import mixarch.kernels.triton.infllm_v2.select as sel
import mixarch.kernels.triton.infllm_v2.sparse as sp
import mixarch.kernels.triton.infllm_v2.decode as dec

GEO = dict(HQ=32, HKV=2, G=16, GP=16, GM=16, D=128, BD=128, DV=128, BDV=128, BS=64, BSP=64, UPCAST=False,
           PREC="tf32", PDL=False, TMA=False, HIST=False)  # traced calls never take TMA or the decode buckets
KERNELS = {
    sel._lse_kernel: dict(BQ=8, BN=64, WIN=64, STRIDE=32, NSPLIT=4),
    sel._score_kernel: dict(BQ=8, BN=64, WIN=32, STRIDE=16, R=4, TAIL=1, BLOCK=64, NSPLIT_L=4, APPROX=True,
                            WIN2=64, STRIDE2=32),
    sel._topk_kernel: dict(BLOCK=64, TOPK=96, TOPKP=128, BR=2, NBP=2048),
    sp._window_kernel: dict(TOKS=8, STEP=2),
    sp._fwd_kernel: dict(N_IDX=96, N_IDXP=128, SPLIT=True, FORCING=True, FROM_PART=True),
    sp._combine_kernel: dict(NSP=64, DC=4),
    sp._dq_window_kernel: dict(TOKS=8, STEP=2),
    sp._dq_kernel: dict(N_IDX=96, N_IDXP=128, FORCING=True, FROM_PART=True),
    sp._dkv_window_kernel: dict(TOKS=4),
    sp._dkv_kernel: dict(BQ=4),
    dec._rank_topk_kernel: dict(BS=64, TOPK=96, TOPKP=128, NBP=2048, J=4),
}
import mixarch.kernels.triton.lightning.chunk as lc
import mixarch.kernels.triton.lightning.recurrent as lr

LIGHTNING = dict(H=4, DK=128, DV=128, DA=128, DB=128, BK=128, BA=128, TV=64, TB=64, TK=64, BV=128, BB=32, C=64,
                 REVERSE=False, VARLEN=True, IEEE=False, IEEE_AV=False, HAS_INIT=True, HAS_STATE=True)
#: Lightning kernels and their pointer arguments (no ``_ptr`` suffix there)
LIGHTNING_KERNELS = {
    lc._segment_state: "a b decay out slot_start slot_len",
    lc._scan: "local init enter final decay slot_len seq_first",
    lc._chunk_fwd: "q k v decay enter o slot_start slot_len",
    lc._chunk_bwd_dq: "do k v decay enter dq slot_start slot_len",
    lc._chunk_bwd_dk: "q v do decay arrive dk slot_start slot_len",
    lc._chunk_bwd_dv: "q k do decay arrive dv slot_start slot_len",
    lr._step: "q k v decay state new_state o",
}
INT = {"mask_ptr": torch.bool, "slot_start": torch.int64, "slot_len": torch.int32, "seq_first": torch.int32, "idx_ptr": torch.int64, "out_ptr": torch.int64, "csr_q_ptr": torch.int32, "blk_off_ptr": torch.int64,
       "item_off_ptr": torch.int64, "item_blk_ptr": torch.int64}
analyze = getattr(wrap, "identify_accessed_tensors", None)
written = {}
cases = [(kernel, {**GEO, **extra}, ()) for kernel, extra in KERNELS.items()]
cases += [(kernel, LIGHTNING, pointers.split()) for kernel, pointers in LIGHTNING_KERNELS.items()]
for kernel, consts, pointers in cases:
    jit = kernel
    while not isinstance(jit, triton.runtime.JITFunction):  # autotuned kernels wrap their JITFunction
        jit = jit.fn
    kwargs = {}
    for name in inspect.signature(jit.fn).parameters:
        if name in consts:
            kwargs[name] = consts[name]
        elif name.endswith("_ptr") or name in pointers:
            kwargs[name] = torch.empty(8, dtype=INT.get(name, torch.float32))
        elif name.endswith("_desc"):  # traced calls pass k / v themselves (TMA only for direct launches)
            kwargs[name] = torch.empty(8)
        else:
            kwargs[name] = 0.5 if name in ("qk_scale", "scale") else 3
    if analyze is not None:
        names = [d.name for d in analyze(kernel, kwargs, {}).read_writes.writes]
    else:  # torch <= 2.11
        names = wrap.identify_mutated_tensors(kernel, kwargs, {})
    written[jit.fn.__name__] = sorted(names)
print(json.dumps(written))
'''


#: what each Lightning kernel writes
LIGHTNING_OUTPUTS = {"_segment_state": {"out"}, "_scan": {"enter", "final"}, "_chunk_fwd": {"o"},
                     "_chunk_bwd_dq": {"dq"}, "_chunk_bwd_dk": {"dk"}, "_chunk_bwd_dv": {"dv"},
                     "_step": {"new_state", "o"}}
#: the packed-sequence slot tables: built inside the op, read by the kernels through a helper call (``_program``),
#: which the analysis counts as a write (compiled packed calls copy these two small int tensors; no input is
#: affected)
SLOT_TABLES = {"slot_start", "slot_len"}


@pytest.fixture(scope="module")
def written() -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_every_kernel_is_analyzed(written):
    assert len(written) == 11 + len(LIGHTNING_OUTPUTS)


@pytest.mark.parametrize("kernel", ["_lse_kernel", "_score_kernel", "_topk_kernel", "_window_kernel", "_fwd_kernel",
                                    "_combine_kernel", "_dq_window_kernel", "_dq_kernel", "_dkv_window_kernel",
                                    "_dkv_kernel", "_rank_topk_kernel"])
def test_only_outputs_count_as_written(written, kernel):
    inputs = INPUTS | {"k_desc", "v_desc"} | ({"o_ptr", "lse_ptr"} if kernel in BACKWARD else set())
    assert written[kernel], f"{kernel}: nothing written"
    assert not inputs & set(written[kernel]), f"{kernel} writes its inputs according to torch: {written[kernel]}"


@pytest.mark.parametrize("kernel", sorted(LIGHTNING_OUTPUTS))
def test_lightning_kernels_write_their_outputs_only(written, kernel):
    assert set(written[kernel]) - SLOT_TABLES == LIGHTNING_OUTPUTS[kernel], written[kernel]
