"""The Gluon Lightning kernels (``mixarch.kernels.triton.lightning.gluon_sweep``, ``gluon_state``) compile for sm_90
on any machine.

Gluon has no interpreter, so on a CPU its kernel never runs; this compiles it to PTX for a Hopper target (in a
subprocess without ``TRITON_INTERPRET``) for each variant the forward launches, so that an API change of Gluon or an
edit of the kernel fails in CI rather than first on a GPU (the forward, and the backward's dq / dk / dv sweeps). It also checks what the kernel is for: a chunk's
matmuls are waited on with one still in flight (``wgmma.wait_group 1``), and the shared memory leaves room for two
programs per multiprocessor (one for the state pass). (Their results are tested on GPUs: ``tests/test_triton_lightning.py``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r'''
import json, sys
from triton.backends.compiler import GPUTarget
import triton
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
import mixarch.kernels.triton.lightning.gluon_sweep as G

out = {}
VARIANTS = (("bf16", gl.bfloat16, False, False, False), ("bf16 varlen", gl.bfloat16, True, False, False),
            ("fp16", gl.float16, False, False, False), ("dq", gl.bfloat16, False, False, True),
            ("dk", gl.bfloat16, True, True, True), ("dv", gl.float16, False, True, False))
for name, dtype, varlen, reverse, state_t in VARIANTS:
    tn = "bf16" if dtype == gl.bfloat16 else "fp16"
    box_qk = gl.NVMMASharedLayout.get_default_for([G.CHUNK, 128], dtype)
    box_v = gl.NVMMASharedLayout.get_default_for([G.CHUNK, G.TILE], dtype)
    sig = {"q_desc": f"tensordesc<{tn}[{G.CHUNK},128],{box_qk!r}>", "k_desc": f"tensordesc<{tn}[{G.CHUNK},128],{box_qk!r}>",
           "v_desc": f"tensordesc<{tn}[{G.CHUNK},{G.TILE}],{box_v!r}>",
           "o_desc": f"tensordesc<{tn}[{G.CHUNK},{G.TILE}],{box_v!r}>", "decay": "*fp32", "enter": "*fp32",
           "o_ptr": f"*{tn}", "slot_start": "*i32", "slot_len": "*i32", "T": "i32", "NSEG": "i32", "SEG": "i32",
           "scale": "fp32"}
    consts = dict(H=32, DK=128, DV=128, TV=G.TILE, C=G.CHUNK, STAGES=G.STAGES,
                  P_LAYOUT=gl.NVMMASharedLayout.get_default_for([G.CHUNK, G.CHUNK], dtype),
                  VARLEN=varlen, REVERSE=reverse, STATE_T=state_t, num_warps=4)
    if not varlen:
        consts.update(slot_start=None, slot_len=None)
    for key in consts:
        sig[key] = "constexpr"
    names = G._sweep.arg_names
    src = GluonASTSource(G._sweep, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
    ptx = kernel.asm["ptx"]
    out[name] = dict(shared=kernel.metadata.shared, overlapped="wgmma.wait_group.sync.aligned 1;" in ptx,
                     wgmma=ptx.count("wgmma.mma_async"))
import mixarch.kernels.triton.lightning.gluon_state as S
for name, dtype, varlen, reverse in (("state", gl.bfloat16, False, False), ("state varlen", gl.bfloat16, True, False),
                                     ("state reverse", gl.float16, False, True)):
    tn = "bf16" if dtype == gl.bfloat16 else "fp16"
    box_a = gl.NVMMASharedLayout.get_default_for([S.CHUNK, 128], dtype)
    box_b = gl.NVMMASharedLayout.get_default_for([S.CHUNK, S.TILE], dtype)
    sig = {"a_desc": f"tensordesc<{tn}[{S.CHUNK},128],{box_a!r}>",
           "b_desc": f"tensordesc<{tn}[{S.CHUNK},{S.TILE}],{box_b!r}>", "decay": "*fp32", "out": "*fp32",
           "slot_start": "*i32", "slot_len": "*i32", "T": "i32", "NSEG": "i32", "SEG": "i32", "scale": "fp32"}
    consts = dict(H=32, DA=128, DB=128, TB=S.TILE, C=S.CHUNK, STAGES=S.STAGES, BW_LAYOUT=box_b, REVERSE=reverse,
                  VARLEN=varlen, num_warps=S.WARPS)
    if not varlen:
        consts.update(slot_start=None, slot_len=None)
    for key in consts:
        sig[key] = "constexpr"
    names = S._states.arg_names
    src = GluonASTSource(S._states, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=S.WARPS))
    ptx = kernel.asm["ptx"]
    out[name] = dict(shared=kernel.metadata.shared, overlapped="wgmma.wait_group.sync.aligned 1;" in ptx,
                     wgmma=ptx.count("wgmma.mma_async"))
print(json.dumps(out))
'''


def test_gluon_sweep_compiles_for_hopper():
    pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(results) == {"bf16", "bf16 varlen", "fp16", "dq", "dk", "dv", "state", "state varlen", "state reverse"}
    for name, got in results.items():
        assert got["overlapped"], f"{name}: no wgmma wait with one group in flight"
        assert got["wgmma"] > 0, name
        per_sm = 1 if name.startswith("state") else 2  # the state pass: one program of 8 warps per multiprocessor
        assert per_sm * (got["shared"] + 1024) <= 228 * 1024, f"{name}: {got['shared']} bytes of shared memory"
