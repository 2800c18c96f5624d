"""The Gluon Lightning kernels (``mixarch.kernels.triton.lightning.gluon_sweep``, ``gluon_state``) compile for sm_90
on any machine.

Gluon has no interpreter, so on a CPU its kernel never runs; this compiles it to PTX for a Hopper target (in a
subprocess without ``TRITON_INTERPRET``) for each variant the forward launches, so that an API change of Gluon or an
edit of the kernel fails in CI rather than first on a GPU (the forward, and the backward's dq / dk / dv sweeps, with one
warpgroup per program and with two). It also checks what the kernel is for: a chunk's
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
import mixarch.kernels.triton.lightning.gluon_state as S
import mixarch.kernels.triton.lightning.gluon_sweep as G

SCALARS = {"slot_start": "*i32", "slot_len": "*i32", "T": "i32", "NSEG": "i32", "SEG": "i32", "scale": "fp32",
           "decay": "*fp32"}


def desc(dtype, rows, cols):
    tn = "bf16" if dtype == gl.bfloat16 else "fp16"
    return f"tensordesc<{tn}[{rows},{cols}],{gl.NVMMASharedLayout.get_default_for([rows, cols], dtype)!r}>"


def compile_variant(kernel, sig, consts, warps):
    """sm_90 PTX of ``kernel`` for this signature and these constexprs: its shared memory, whether a wgmma wait
    leaves a group in flight, and its wgmma count."""
    if not consts["VARLEN"]:
        consts.update(slot_start=None, slot_len=None)
    sig = {**SCALARS, **sig, **{key: "constexpr" for key in consts}}
    names = kernel.arg_names
    src = GluonASTSource(kernel, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    ptx = compiled.asm["ptx"]
    return dict(shared=compiled.metadata.shared, overlapped="wgmma.wait_group.sync.aligned 1;" in ptx,
                wgmma=ptx.count("wgmma.mma_async"))


out = {}
SWEEPS = (("bf16", gl.bfloat16, False, False, False), ("bf16 varlen", gl.bfloat16, True, False, False),
          ("fp16", gl.float16, False, False, False), ("dq", gl.bfloat16, False, False, True),
          ("dk", gl.bfloat16, True, True, True), ("dv", gl.float16, False, True, False))
# every sweep with one warpgroup per program and with two (gluon_sweep.WIDE)
for wg, (name, dtype, varlen, reverse, state_t) in [(wg, sweep) for wg in (1, 2) for sweep in SWEEPS]:
    tn, tv = ("bf16" if dtype == gl.bfloat16 else "fp16"), wg * G.TILE
    sig = {"q_desc": desc(dtype, G.CHUNK, 128), "k_desc": desc(dtype, G.CHUNK, 128),
           "v_desc": desc(dtype, G.CHUNK, tv), "o_desc": desc(dtype, G.CHUNK, tv), "enter": "*fp32",
           "o_ptr": f"*{tn}"}
    consts = dict(H=32, DK=128, DV=128, TV=tv, C=G.CHUNK, STAGES=G.WIDE_STAGES if wg == 2 else G.STAGES,
                  P_LAYOUT=gl.NVMMASharedLayout.get_default_for([G.CHUNK, G.CHUNK], dtype),
                  VARLEN=varlen, REVERSE=reverse, STATE_T=state_t, num_warps=4 * wg)
    label = name + (" wide" if wg == 2 else "")
    out[label] = compile_variant(G._sweep, sig, consts, 4 * wg)
for name, dtype, varlen, reverse, underflow in (("state", gl.bfloat16, False, False, 160.0),
                                                ("state varlen", gl.bfloat16, True, False, 160.0),
                                                ("state reverse", gl.float16, False, True, 160.0),
                                                ("state every chunk", gl.bfloat16, False, False, 0.0)):
    sig = {"a_desc": desc(dtype, S.CHUNK, 128), "b_desc": desc(dtype, S.CHUNK, S.TILE), "out": "*fp32"}
    consts = dict(H=32, DA=128, DB=128, TB=S.TILE, C=S.CHUNK, STAGES=S.STAGES,
                  BW_LAYOUT=gl.NVMMASharedLayout.get_default_for([S.CHUNK, S.TILE], dtype), REVERSE=reverse,
                  VARLEN=varlen, UNDERFLOW=underflow, num_warps=S.WARPS)
    out[name] = compile_variant(S._states, sig, consts, S.WARPS)
print(json.dumps(out))
'''


def test_gluon_sweep_compiles_for_hopper():
    pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    sweeps = {"bf16", "bf16 varlen", "fp16", "dq", "dk", "dv"}
    assert set(results) == sweeps | {s + " wide" for s in sweeps} | {"state", "state varlen", "state reverse",
                                                                     "state every chunk"}
    for name, got in results.items():
        assert got["overlapped"], f"{name}: no wgmma wait with one group in flight"
        assert got["wgmma"] > 0, name
        # the state pass and the wide sweep: one program of 8 warps per multiprocessor
        per_sm = 1 if name.startswith("state") or " wide" in name else 2
        assert per_sm * (got["shared"] + 1024) <= 228 * 1024, f"{name}: {got['shared']} bytes of shared memory"
