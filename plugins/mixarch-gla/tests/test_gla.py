"""Tests of mixarch-gla: the GLA ops (hypothesis properties), the ``gla`` mixer (mixarch conformance checks),
and the plugin's discovery and error messages."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from mixarch_gla.ops import acc_dtype, chunk_gla, naive_recurrent_gla

from mixarch.errors import BlueprintError
from mixarch.plugins import PluginHost, get_host
from mixarch.testing import assert_close, assert_close_rel, nan_poison
from mixarch.testing.mixers import (
    build_mixer,
    check_mixer,
    check_mixer_precision,
    check_model_decode,
    tiny_resolved,
)
from mixarch.testing.strategies import compositions, cu_seqlens_from, seeded_randn, seeds, small_seq_lens

BLUEPRINT = Path(__file__).resolve().parents[3] / "blueprints" / "gla-hybrid-tiny.yaml"

batches = st.sampled_from((1, 2))
heads = st.sampled_from((1, 3))
key_dims = st.sampled_from((5, 16, 32))
value_dims = st.sampled_from((7, 16))
chunk_sizes = st.sampled_from((16, 5, 64))
# gate strength: g = strength * logsigmoid(2 z); 0 is plain linear attention, 30 decays by ~e^-30 per token
strengths = st.sampled_from((0.0, 0.1, 1.0, 30.0))

# per dtype under test: how results are compared with the fp64 recurrent reference
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4)}


def make_inputs(seed: int, b: int, t: int, h: int, dk: int, dv: int, strength: float, *, with_state: bool = True):
    """fp64 q, k, v, g, h0 (h0 None unless ``with_state``)."""
    return {
        "q": seeded_randn((b, t, h, dk), seed, dtype=torch.float64),
        "k": seeded_randn((b, t, h, dk), seed + 1, dtype=torch.float64),
        "v": seeded_randn((b, t, h, dv), seed + 2, dtype=torch.float64),
        "g": F.logsigmoid(seeded_randn((b, t, h, dk), seed + 3, dtype=torch.float64) * 2) * strength,
        "h0": seeded_randn((b, h, dk, dv), seed + 4, dtype=torch.float64) if with_state else None,
    }


def cast(inputs: dict, dtype: torch.dtype) -> dict:
    """q, k, v, g in ``dtype``; the state in the accumulation dtype (fp32 for 16-bit inputs)."""
    out = {n: x.to(dtype) for n, x in inputs.items() if n != "h0"}
    out["h0"] = None if inputs["h0"] is None else inputs["h0"].to(acc_dtype(dtype))
    return out


def run(op, inputs: dict, seed: int, grad_dtype: torch.dtype = torch.float64, **kw) -> dict:
    """Outputs, final state and gradients of every input under random upstream gradients for o and state
    (rounded to ``grad_dtype``, so a reference sees the same upstream gradients as a 16-bit run)."""
    leaves = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items() if x is not None}
    o, state = op(leaves["q"], leaves["k"], leaves["v"], leaves["g"], initial_state=leaves.get("h0"),
                  output_final_state=True, **kw)
    do = seeded_randn(o.shape, seed + 10, dtype=grad_dtype).double()
    ds = seeded_randn(state.shape, seed + 11, dtype=acc_dtype(grad_dtype)).double()
    loss = (o.double() * do).sum() + (state.double() * ds).sum()
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
    else:  # nothing to differentiate (e.g. only empty packed sequences and no initial state)
        grads = [torch.zeros_like(x) for x in leaves.values()]
    return {"o": o, "state": state, **{f"d{n}": gr for n, gr in zip(leaves, grads)}}


def compare(label: str, ref: dict, out: dict, dtype: torch.dtype) -> None:
    for name in ref:
        if dtype in TOL:
            assert_close(f"{label} {name}", ref[name], out[name], **TOL[dtype])
        elif ref[name].abs().max() == 0:  # e.g. dg with T=1 and no initial state: exactly zero
            assert_close(f"{label} {name}", ref[name], out[name], rtol=0, atol=1e-6)
        else:
            assert_close_rel(f"{label} {name}", ref[name], out[name])


# ---------------------------------------------------------------------------------------------------- ops


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@given(seed=seeds, b=batches, t=small_seq_lens, h=heads, dk=key_dims, dv=value_dims, chunk=chunk_sizes,
       strength=strengths, with_state=st.booleans())
def test_chunk_and_naive_match_fp64_reference(dtype, seed, b, t, h, dk, dv, chunk, strength, with_state):
    """Outputs, final states and all gradients of both forms in ``dtype`` equal the fp64 recurrence."""
    inputs = cast(make_inputs(seed, b, t, h, dk, dv, strength, with_state=with_state), dtype)
    with nan_poison():
        ref = run(naive_recurrent_gla, {n: None if x is None else x.double() for n, x in inputs.items()}, seed,
                  grad_dtype=dtype)
        chunked = run(partial(chunk_gla, chunk_size=chunk), inputs, seed, grad_dtype=dtype)
        naive = run(naive_recurrent_gla, inputs, seed, grad_dtype=dtype)
    assert chunked["o"].dtype == dtype and chunked["state"].dtype == acc_dtype(dtype)
    compare(f"chunk_gla {dtype}", ref, chunked, dtype)
    compare(f"naive_recurrent_gla {dtype}", ref, naive, dtype)


@given(seed=seeds, t=small_seq_lens, h=heads, dk=key_dims, dv=value_dims, chunk=chunk_sizes,
       strength=strengths, data=st.data())
def test_split_with_carried_state_equals_whole(seed, t, h, dk, dv, chunk, strength, data):
    """Feeding pieces and carrying the final state (decode steps, chunked prefill) equals one call."""
    parts = data.draw(compositions(t))
    x = make_inputs(seed, 2, t, h, dk, dv, strength)
    with nan_poison():
        whole, final = chunk_gla(x["q"], x["k"], x["v"], x["g"], initial_state=x["h0"], output_final_state=True,
                                 chunk_size=chunk)
        state, outs, start = x["h0"], [], 0
        for n in parts:
            sl = slice(start, start + n)
            op = naive_recurrent_gla if n == 1 else partial(chunk_gla, chunk_size=chunk)
            o, state = op(x["q"][:, sl], x["k"][:, sl], x["v"][:, sl], x["g"][:, sl], initial_state=state,
                          output_final_state=True)
            outs.append(o)
            start += n
    assert_close(f"pieces {parts} output", whole, torch.cat(outs, dim=1), **TOL[torch.float64])
    assert_close(f"pieces {parts} final state", final, state, **TOL[torch.float64])


@pytest.mark.parametrize("op", [naive_recurrent_gla, partial(chunk_gla, chunk_size=16),
                                partial(chunk_gla, chunk_size=5)], ids=["naive", "chunk16", "chunk5"])
@given(seed=seeds, lengths=st.lists(st.sampled_from((0, 1, 5, 16, 17, 33)), min_size=1, max_size=4),
       h=heads, dk=key_dims, dv=value_dims, strength=strengths, with_state=st.booleans())
def test_varlen_equals_loop_over_sequences(op, seed, lengths, h, dk, dv, strength, with_state):
    """Packed sequences (cu_seqlens, state restarting per sequence) equal separate calls, gradients included."""
    total, n = sum(lengths), len(lengths)
    x = make_inputs(seed, 1, total, h, dk, dv, strength, with_state=False)
    x["h0"] = seeded_randn((n, h, dk, dv), seed + 5, dtype=torch.float64) if with_state else None
    cu = cu_seqlens_from(lengths)
    with nan_poison():
        packed = run(partial(op, cu_seqlens=cu), x, seed)
        loop = run(partial(_loop, op, cu), x, seed)
    compare(f"varlen {lengths} vs loop", loop, packed, torch.float64)


def _loop(op, cu, q, k, v, g, *, initial_state, output_final_state):
    """``op`` called once per packed sequence; outputs concatenated, final states stacked."""
    outs, states = [], []
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        h0 = None if initial_state is None else initial_state[i:i + 1]
        o, state = op(q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], initial_state=h0, output_final_state=True)
        outs.append(o)
        states.append(state)
    return torch.cat(outs, dim=1), torch.cat(states)


@given(seed=seeds, b=batches, t=small_seq_lens, h=heads, dk=key_dims, dv=value_dims, strength=strengths,
       with_state=st.booleans())
def test_matches_fla_naive_recurrent_gla(seed, b, t, h, dk, dv, strength, with_state):
    """Cross-check with fla-core's reference (same [B, T, H, D] layout, scale Dk ** -0.5, fp32 compute)."""
    fla_naive = pytest.importorskip("fla.ops.gla.naive")
    x = cast(make_inputs(seed, b, t, h, dk, dv, strength, with_state=with_state), torch.float32)
    args = (x["q"], x["k"], x["v"], x["g"])
    with nan_poison():
        ref, ref_state = fla_naive.naive_recurrent_gla(*args, initial_state=x["h0"], output_final_state=True)
        for label, op in (("naive", naive_recurrent_gla), ("chunk", chunk_gla)):
            o, state = op(*args, initial_state=x["h0"], output_final_state=True)
            assert_close(f"{label} vs fla output", ref, o, **TOL[torch.float32])
            assert_close(f"{label} vs fla final state", ref_state, state, **TOL[torch.float32])


def test_ops_reject_bad_inputs():
    q = torch.zeros(2, 4, 3, 8)
    v = torch.zeros(2, 4, 3, 6)
    with pytest.raises(ValueError, match="g .* must have q's shape"):
        chunk_gla(q, q, v, q[..., :4])
    with pytest.raises(ValueError, match="batch of one packed row"):
        chunk_gla(q, q, v, q, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="rise from 0 to T=4"):
        naive_recurrent_gla(q[:1], q[:1], v[:1], q[:1], cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"initial_state must have shape \[2, 3, 8, 6\]"):
        naive_recurrent_gla(q, q, v, q, initial_state=torch.zeros(2, 3, 6, 8))
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_gla(q, q, v, q, chunk_size=0)


def test_chunk_is_stable_under_vanishing_gates():
    """Gates so strong that cumulative decays underflow to 0 within a chunk: still finite and exact."""
    x = make_inputs(0, 1, 64, 2, 8, 8, 1.0)
    x["g"] = torch.full_like(x["g"], -200.0)  # exp(-200 * 64) == 0 even in fp64
    with nan_poison():
        for dtype in (torch.float32, torch.float64):
            y = cast(x, dtype)
            o, state = chunk_gla(y["q"], y["k"], y["v"], y["g"], initial_state=y["h0"], output_final_state=True)
            # each token only sees itself: o_t = scale * (q_t . k_t) v_t
            want = (y["q"] * y["k"]).sum(-1, keepdim=True).double() * y["v"].double() * 8 ** -0.5
            assert_close(f"{dtype} output", want, o, **TOL[dtype])
            assert_close(f"{dtype} state", (y["k"][0, -1, :, :, None] * y["v"][0, -1, :, None, :]).double(),
                         state[0], **TOL[dtype])


# -------------------------------------------------------------------------------------------------- mixer

CONFIGS = [
    dict(params={"n_heads": 2}),
    dict(params={"n_heads": 1, "expand_k": 1.0, "expand_v": 0.5, "chunk_size": 4, "output_gate": False}),
    dict(params={"n_heads": 4, "gate_low_rank_dim": 4, "gate_normalizer": 1.0, "clamp_min": -3.0},
         positional=("nope", {})),
    dict(params={"n_heads": 3, "expand_k": 0.25, "expand_v": 0.5, "chunk_size": 64}, d_model=48),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c["params"].items()))
def test_check_mixer(config):
    """mixarch's conformance checks: meta-device init, decode and chunked prefill == full forward, exact cache
    bytes, packed sequences."""
    check_mixer("gla", config["params"], d_model=config.get("d_model", 32),
                positional=config.get("positional", ("rope", {})))


@pytest.mark.parametrize("params", [{"n_heads": 2}, {"n_heads": 4, "expand_k": 1.0, "gate_normalizer": 1.0}],
                         ids=["default", "strong-gates"])
def test_check_mixer_precision(params):
    """fp32 and bf16 copies of the layer against fp64 (mixarch's layer-level tolerances)."""
    check_mixer_precision("gla", params)


def test_model_decode_in_hybrid():
    check_model_decode(tiny_resolved([("gla", {"n_heads": 2}), ("attention", {"n_heads": 4, "n_kv_heads": 2}),
                                      ("gla", {"n_heads": 4, "expand_k": 1.0, "chunk_size": 5})]))


def test_layer_is_the_paper_formula():
    """The layer, recomputed by hand from its weights with fla's reference recurrence."""
    fla_naive = pytest.importorskip("fla.ops.gla.naive")
    mixer, params, _ = build_mixer("gla", {"n_heads": 2}, positional=("nope", {}), dtype=torch.float32, seed=3)
    b, t, d = 2, 19, 32
    x = seeded_randn((b, t, d), 7)
    q = mixer.q_proj(x).view(b, t, 2, 8)
    k = mixer.k_proj(x).view(b, t, 2, 8)
    v = mixer.v_proj(x).view(b, t, 2, 16)
    g = F.logsigmoid(mixer.gk_proj[1](mixer.gk_proj[0](x))).view(b, t, 2, 8) / 16
    o, _ = fla_naive.naive_recurrent_gla(q, k, v, g)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * mixer.g_norm.weight
    want = mixer.o_proj((o * F.silu(mixer.g_proj(x).view(b, t, 2, 16))).reshape(b, t, 32))
    with nan_poison():
        got = mixer(x, positions=torch.arange(t).expand(b, t))
    assert_close("gla layer vs formula", want, got, **TOL[torch.float32])


def test_bf16_model_keeps_fp32_state():
    """In a bf16 model the decode state stays fp32, and the cache metadata says so."""
    mixer, params, _ = build_mixer("gla", {"n_heads": 2}, dtype=torch.bfloat16)
    from mixarch.model.cache import LayerCache
    from mixarch.registry import Dims

    cache = LayerCache()
    x = seeded_randn((3, 5, 32), 0, dtype=torch.bfloat16)
    with nan_poison():
        mixer(x, positions=torch.arange(5).expand(3, 5), cache=cache)
    assert cache.state.dtype == torch.float32 and cache.state.shape == (3, 2, 8, 16)
    spec = get_host().mixers.get("gla")
    assert cache.nbytes() == 3 * spec.cache.total(params, Dims(32, 1, 61, dtype_bytes=2), 5)


# ------------------------------------------------------------------------------------------------- plugin


def test_discovered_through_entry_point():
    host = get_host()
    info = host.info["gla"]
    assert (info.distribution, info.builtin, info.registered) == ("mixarch-gla", False, {"mixer": ["gla"]})
    spec = host.mixers.get("gla")
    assert spec.plugin == "gla" and spec.family == "linear" and spec.cache.holds == ("state",)


def test_load_plugins_env_excludes_it(monkeypatch):
    monkeypatch.setenv("MIXARCH_LOAD_PLUGINS", "")
    host = PluginHost()
    assert "gla" not in host.mixers and "gla" not in host.info


def test_duplicate_name_is_an_error_unless_override():
    from mixarch_gla.mixer import GLAParams, make_gla

    from mixarch.errors import DuplicateRegistrationError
    from mixarch.hookspecs import hookimpl
    from mixarch.plugins import plugins_added

    class Again:
        def __init__(self, override: bool):
            self.override = override

        @hookimpl
        def mixarch_register_mixers(self, register):
            register("gla", make_gla, GLAParams, family="linear", override=self.override)

    with pytest.raises(DuplicateRegistrationError, match="'gla' is registered by both plugin 'gla' and plugin 'again'"):
        with plugins_added((Again(False), "again")):
            pass
    with plugins_added((Again(True), "again")) as host:
        assert host.mixers.get("gla").plugin == "again"
        assert [(old.plugin, new.plugin) for old, new in host.mixers.overridden] == [("gla", "again")]


def test_cli_builds_blueprint(capsys):
    if not BLUEPRINT.exists():
        pytest.skip("not run from the mixarch repository")
    from mixarch.cli.main import main

    assert main(["build", str(BLUEPRINT), "--json", "--seq-len", "1K"]) == 0
    rep = json.loads(capsys.readouterr().out)
    gla = rep["cache_bytes_by_role"]["gla"]
    assert [la["mixer"] for la in rep["layers"]] == ["gla", "gla", "attention"] * 2
    assert gla["family"] == "linear" and gla["holds"] == ["state"]
    assert gla["bytes"]["1024"] == 4 * (4 * 8 * 16 * 4)  # 4 layers x [H=4, Dk=8, Dv=16] fp32


@pytest.mark.parametrize("params, message", [
    ({"n_heads": 3}, "expand_k * d_model = 32 channels do not divide into n_heads (3) heads"),
    ({"n_heads": 4, "expand_k": 0.3}, "expand_k * d_model = 0.3 * 64 = 19.2 is not a whole number of channels"),
    ({"n_heads": 4, "expand_q": 1}, "unknown key; expected one of: expand_k"),
    ({"n_heads": 4, "clamp_min": 1}, "less than 0"),
    ({}, "n_heads: required key is missing"),
])
def test_bad_params_give_clear_errors(params, message):
    from mixarch.blueprint.load import load_data, validate
    from mixarch.blueprint.resolve import resolve
    from mixarch.blueprint.schema import Blueprint

    if not BLUEPRINT.exists():
        pytest.skip("not run from the mixarch repository")
    data, provenance = load_data(BLUEPRINT)
    data["roles"]["gla"]["mixer"]["params"] = params
    with pytest.raises(BlueprintError) as err:
        resolve(validate(Blueprint, data, provenance), provenance)
    assert "roles.gla.mixer.params" in str(err.value) and message in str(err.value)


def test_blueprint_model_trains_in_bf16():
    """The hybrid blueprint as a bf16 model: finite loss, a finite gradient for every parameter."""
    if not BLUEPRINT.exists():
        pytest.skip("not run from the mixarch repository")
    from mixarch.blueprint.resolve import resolve_file
    from mixarch.model.hybrid import build_model

    model = build_model(resolve_file(BLUEPRINT), dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
