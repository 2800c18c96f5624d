"""The seed mixers (lightning, infllm_v2, sliding_window) and whole tiny SALA / HypeNet models:
decode == chunked prefill == full forward, exact cache metadata, packed sequences, precision."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mixarch
from mixarch.model.hybrid import build_model
from mixarch.testing.compare import LAYER_REL_RMSE_TOL, assert_close_rel, rel_rmse
from mixarch.testing.mixers import check_mixer, check_mixer_precision, check_model_decode

SMALL_INFLLM = dict(block_size=4, kernel_size=2, kernel_stride=1, local_blocks=1, topk=3, dense_len=8)


@st.composite
def heads(draw, d_model=24):
    n_heads = draw(st.sampled_from([1, 2, 3, 6]))
    group = draw(st.sampled_from([g for g in (1, 2, 3) if n_heads % g == 0]))
    head_dim = draw(st.sampled_from([None, 4, 8]))
    return {"n_heads": n_heads, "n_kv_heads": n_heads // group, **({"head_dim": head_dim} if head_dim else {})}


@settings(max_examples=6)
@given(heads(), st.booleans(), st.booleans(), st.sampled_from([1, 4, 64]), st.sampled_from(["alibi",
                                                                                             "alibi_layer_scaled"]))
def test_lightning_mixer(h, qk_norm, gate, chunk_size, decay):
    check_mixer("lightning", {**h, "qk_norm": qk_norm, "output_gate": gate, "output_norm": not gate,
                              "chunk_size": chunk_size, "decay": decay}, d_model=24, seq_lens=(1, 15, 65), chunk=7)


@settings(max_examples=6)
@given(heads(), st.booleans(), st.booleans(), st.sampled_from([("rope", {}), ("nope", {})]))
def test_infllm_v2_mixer(h, exact, qk_norm, positional):
    check_mixer("infllm_v2", {**h, **SMALL_INFLLM, "exact_normalizer": exact, "qk_norm": qk_norm}, d_model=24,
                seq_lens=(1, 15, 40), chunk=6, positional=positional)


@settings(max_examples=4)
@given(heads(), st.integers(1, 9))
def test_sliding_window_mixer(h, window):
    check_mixer("sliding_window", {**h, "window": window}, d_model=24, seq_lens=(1, 15, 33), chunk=5)


@pytest.mark.parametrize("name, params, positional", [
    ("attention", {"n_heads": 4, "n_kv_heads": 2, "qk_norm": True, "output_gate": True}, ("rope", {})),
    ("lightning", {"n_heads": 4}, ("rope", {})),
    ("lightning", {"n_heads": 4, "kernel_dtype": "float32"}, ("rope", {})),
    ("infllm_v2", {"n_heads": 4, "n_kv_heads": 2, **SMALL_INFLLM}, ("nope", {})),
    ("sliding_window", {"n_heads": 4, "window": 5}, ("rope", {})),
])
def test_mixer_precision(name, params, positional):
    check_mixer_precision(name, params, positional=positional)


def test_infllm_v2_decode_crosses_dense_len_and_goes_sparse():
    """Decode through dense_len: the cache's incremental compressed keys drive a sparse selection."""
    check_mixer("infllm_v2", {"n_heads": 2, "n_kv_heads": 1, **SMALL_INFLLM}, seq_lens=(30,), chunk=4,
                positional=("nope", {}))


@pytest.mark.parametrize("blueprint, seq_len, prefill", [
    ("blueprints/sala-tiny.yaml", 70, 37),
    ("blueprints/hypenet-tiny.yaml", 40, 13),
])
def test_tiny_models_decode_equals_full_forward(blueprint, seq_len, prefill):
    check_model_decode(mixarch.resolve(blueprint), seq_len=seq_len, prefill=prefill)


@pytest.mark.parametrize("blueprint", ["blueprints/sala-tiny.yaml", "blueprints/hypenet-tiny.yaml"])
def test_tiny_models_bf16_decode_against_fp64(blueprint):
    """bf16 prefill + decode vs the fp64 forward of the same weights, by relative RMSE: independent rounding
    errors of the layers add in quadrature, so the layer tolerance scales with sqrt(n_layers); and decoding
    must not be less precise than the bf16 full forward."""
    model = build_model(mixarch.resolve(blueprint), dtype=torch.bfloat16).eval()
    ref = build_model(mixarch.resolve(blueprint), dtype=torch.bfloat16).double().eval()
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(0))
    full = ref(ids)
    cache = model.new_cache()
    steps = torch.cat([model(ids[:, :20], cache=cache)] + [model(ids[:, i:i + 1], cache=cache)
                                                          for i in range(20, 48)], dim=1)
    tol = LAYER_REL_RMSE_TOL[torch.bfloat16] * math.sqrt(len(model.blocks))
    assert_close_rel("bf16 forward vs fp64", full, model(ids).double(), tol)
    assert_close_rel("bf16 prefill + decode vs fp64", full, steps.double(), tol)
    assert rel_rmse(full, steps) <= 1.1 * rel_rmse(full, model(ids))


def test_sala_tiny_layout_and_sparse_path():
    resolved = mixarch.resolve("blueprints/sala-tiny.yaml")
    assert [la.mixer.type for la in resolved.layers] == ["infllm_v2"] + ["lightning"] * 6 + ["infllm_v2"]
    model = build_model(resolved)
    assert model.blocks[0].mixer.positional.label == "hype:nope"
    assert model.blocks[1].mixer.positional.label == "hype:rope(θ=10000)"
    ids = torch.randint(0, 256, (1, 80))
    assert torch.isfinite(model(ids)).all()
