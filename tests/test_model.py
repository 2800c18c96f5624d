"""HybridLM: parameter counts, muP scalars, packing, decode, init, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_blueprint, write_yaml

import mixarch
from mixarch.blueprint.resolve import resolve_file
from mixarch.model.hybrid import HybridLM, build_model
from mixarch.model.io import load, save
from mixarch.testing.compare import assert_close
from mixarch.testing.mixers import check_mixer, check_model_decode, tiny_resolved


def qwen3_1_7b_hand_count() -> int:
    d, n_layers, vocab, heads, kv, hd, inner = 2048, 28, 151936, 16, 8, 128, 6144
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 2 * hd  # q, k, v, o, q_norm, k_norm
    mlp = 3 * d * inner
    norms = 2 * d
    return n_layers * (attention + mlp + norms) + vocab * d + d  # tied embedding/head, final norm


def test_transformer_parameter_count_on_meta_matches_hand_count():
    resolved = mixarch.resolve("blueprints/transformer.yaml")
    with torch.device("meta"):
        model = HybridLM(resolved)
    assert all(p.is_meta for p in model.parameters())
    assert model.num_parameters() == qwen3_1_7b_hand_count() == 1_720_574_976


def test_meta_count_equals_materialized_count(tmp_path):
    resolved = resolve_file(write_yaml(tmp_path / "b.yaml", tiny_blueprint(tie_embeddings=False)))
    with torch.device("meta"):
        meta = HybridLM(resolved)
    assert meta.num_parameters() == build_model(resolved).num_parameters()


def test_tied_head_shares_the_embedding():
    model = mixarch.build("blueprints/tiny.yaml")
    assert model.lm_head.weight is model.embed.weight
    untied = build_model(tiny_resolved([("attention", {"n_heads": 2})], tie_embeddings=False))
    assert untied.lm_head.weight is not untied.embed.weight
    assert untied.num_parameters() - untied.embed.weight.numel() == sum(
        p.numel() for n, p in untied.named_parameters() if n != "embed.weight")


def test_init_is_seeded():
    a = mixarch.build("blueprints/tiny.yaml", seed=3)
    b = mixarch.build("blueprints/tiny.yaml", seed=3)
    c = mixarch.build("blueprints/tiny.yaml", seed=4)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.embed.weight, c.embed.weight)
    assert abs(a.embed.weight.std().item() - 0.02) < 0.005  # model.init_std


def test_mup_scalars():
    mup = {"scale_emb": 12.0, "scale_depth": 1.4, "dim_model_base": 8}
    resolved = tiny_resolved([("attention", {"n_heads": 2})] * 3, d_model=32, mup=mup)
    model = build_model(resolved, dtype=torch.float64)
    assert model.embed_scale == 12.0 and model.logit_divisor == 32 / 8
    assert all(math.isclose(b.residual_scale, 1.4 / math.sqrt(3)) for b in model.blocks)
    ids = torch.randint(0, 61, (1, 6))
    # recompute the forward by hand from the parts
    x = model.embed(ids) * 12.0
    positions = torch.arange(6).unsqueeze(0)
    for block in model.blocks:
        s = 1.4 / math.sqrt(3)
        x = x + s * block.mixer(block.mixer_norm(x), positions=positions)
        x = x + s * block.ffn(block.ffn_norm(x))
    expected = model.lm_head(model.norm(x) / 4.0)
    assert_close("muP forward", expected, model(ids))


def test_packed_sequences_equal_separate_ones():
    model = build_model(tiny_resolved([("attention", {"n_heads": 4, "n_kv_heads": 2}),
                                       ("attention", {"n_heads": 2, "window": 3})]), dtype=torch.float64)
    lengths = [4, 1, 7]
    seqs = [torch.randint(0, 61, (1, n)) for n in lengths]
    separate = torch.cat([model(s) for s in seqs], dim=1)
    cu = torch.tensor([0, 4, 5, 12])
    packed = model(torch.cat(seqs, dim=1), cu_seqlens=cu)
    assert_close("packed vs separate", separate, packed)


def test_logits_to_keep():
    model = mixarch.build("blueprints/tiny.yaml")
    ids = torch.randint(0, 256, (2, 9))
    assert_close("last logits", model(ids)[:, -1:], model(ids, logits_to_keep=1))


def test_tiny_blueprint_decode_matches_forward():
    check_model_decode(mixarch.resolve("blueprints/tiny.yaml"), seq_len=40, prefill=17)


@pytest.mark.parametrize("params", [
    {"n_heads": 4, "n_kv_heads": 2, "qk_norm": True},
    {"n_heads": 3, "n_kv_heads": 1, "head_dim": 8, "output_gate": True},
    {"n_heads": 2, "window": 5, "bias": True},
])
def test_attention_mixer_conformance(params):
    check_mixer("attention", params, d_model=24)


def test_attention_with_nope_conformance():
    check_mixer("attention", {"n_heads": 2}, positional=("nope", {}))


def test_build_out_then_load_gives_identical_logits(tmp_path):
    model = mixarch.build("blueprints/tiny.yaml", seed=7)
    save(model, tmp_path / "m")
    assert (tmp_path / "m" / "resolved.yaml").is_file() and (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load(tmp_path / "m")
    ids = torch.randint(0, 256, (2, 11))
    assert torch.equal(model(ids), loaded(ids))
    assert loaded.lm_head.weight is loaded.embed.weight
    assert loaded.resolved == model.resolved


def test_load_rejects_mismatched_weights(tmp_path):
    save(mixarch.build("blueprints/tiny.yaml"), tmp_path / "m")
    text = (tmp_path / "m" / "resolved.yaml").read_text().replace("vocab_size: 256", "vocab_size: 300")
    (tmp_path / "m" / "resolved.yaml").write_text(text)
    with pytest.raises(mixarch.errors.MixarchError, match="does not match"):
        load(tmp_path / "m")
    with pytest.raises(mixarch.errors.MixarchError, match="not a directory"):
        load(tmp_path / "missing")
