"""HyPE positional policy, the HALO selector and HALO's layer-swap scoring."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import run_cli, tiny_blueprint, write_yaml
from hypothesis import given
from hypothesis import strategies as st

import mixarch
from mixarch.convert import attention_to_lightning, layer_swap_scores
from mixarch.mixers.lightning import LightningAttention
from mixarch.model.context import LayerContext
from mixarch.model.hybrid import build_model
from mixarch.positional.hype import HyPEParams, LogScaledNoPE, make_hype
from mixarch.positional.rope import RoPE
from mixarch.registry import Dims
from mixarch.selectors.halo import HaloParams, halo_importance, select_halo
from mixarch.testing.compare import assert_close


def ctx(family: str) -> LayerContext:
    return LayerContext(index=0, n_layers=2, role="r", family=family, dims=Dims(32, 2, 10))


def test_hype_policy_by_family():
    params = HyPEParams(rope_theta=500.0)
    assert isinstance(make_hype(params, ctx("linear")), RoPE) and make_hype(params, ctx("linear")).theta == 500.0
    for family in ("softmax", "sparse"):
        assert make_hype(params, ctx(family)).label == "hype:nope"
    scaled = make_hype(HyPEParams(logit_scaling_alpha=500), ctx("sparse"))
    assert isinstance(scaled, LogScaledNoPE)
    assert isinstance(make_hype(HyPEParams(logit_scaling_alpha=500), ctx("linear")), RoPE)


def test_hype_logit_scaling_formula_and_inference_only():
    module = LogScaledNoPE(500.0)
    q, k = torch.randn(1, 4, 2, 8, dtype=torch.float64), torch.randn(1, 4, 2, 8, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 100, 10**6]])
    module.train()
    assert module(q, k, positions)[0] is q  # off while training
    module.eval()
    q2, k2 = module(q, k, positions)
    assert k2 is k
    expected = [math.log(t + 500) / math.log(500) for t in (0, 1, 100, 10**6)]
    assert_close("s_t", torch.tensor(expected, dtype=torch.float64)[None, :, None, None] * q, q2)
    always = LogScaledNoPE(500.0, always=True).train()
    assert_close("always", q2, always(q, k, positions)[0])


def test_halo_importance_formula():
    r, cs = [0.9, 0.5, 0.8, 0.9], [0.7, 0.6, 0.7, 0.5]
    got = halo_importance(r, cs)
    want = [min(50, (0.9 - x) / (0.7 - y + 1e-10)) for x, y in zip(r, cs)]
    assert got == pytest.approx(want)
    assert got[0] == 0.0 and got[2] == 50.0  # no retrieval loss; capped at 50 when commonsense is unaffected


@given(st.integers(3, 40), st.data())
def test_halo_selection_properties(n_layers, data):
    scores = st.lists(st.floats(0, 1), min_size=n_layers, max_size=n_layers)
    r, cs = data.draw(scores), data.draw(scores)
    force = data.draw(st.sets(st.sampled_from([0, -1, 1]), max_size=2))
    keep = data.draw(st.integers(max(len({f % n_layers for f in force}), 1), n_layers))
    sel = select_halo(HaloParams(retrieval=r, commonsense=cs, keep=keep, force=sorted(force)), n_layers, [])
    kept = [i for i, role in enumerate(sel.roles) if role == "attention"]
    assert len(kept) == keep and all(f % n_layers in kept for f in force)
    importance = halo_importance(r, cs)
    free_kept = [importance[i] for i in kept if i % n_layers not in {f % n_layers for f in force}]
    dropped = [importance[i] for i in range(n_layers) if i not in kept]
    if free_kept and dropped:
        assert min(free_kept) >= max(dropped)
    assert all(info["halo_importance"] == pytest.approx(importance[i]) for i, info in enumerate(sel.info))


def test_halo_in_a_blueprint_puts_scores_in_the_resolved_table(tmp_path, capsys):
    bp = tiny_blueprint()
    bp["roles"] = {"attention": {"mixer": {"type": "attention", "params": {"n_heads": 4}}},
                   "linear": {"mixer": {"type": "lightning", "params": {"n_heads": 4}}}}
    bp["layout"] = {"selector": "halo", "params": {"retrieval": [0.5, 0.9, 0.2, 0.8],
                                                   "commonsense": [0.7, 0.7, 0.6, 0.69], "keep": 2, "force": [0]}}
    resolved = mixarch.resolve(write_yaml(tmp_path / "halo.yaml", bp))
    # importance: layer 1 loses no retrieval (0); layer 2: 0.7 / 0.1 = 7; layer 3: 0.1 / 0.01 = 10
    assert [la.role for la in resolved.layers] == ["attention", "linear", "linear", "attention"]
    assert resolved.layers[2].info["halo_importance"] == pytest.approx(7.0)
    assert resolved.layers[3].info["halo_importance"] == pytest.approx(10.0)
    assert resolved.layers[0].info["forced"] is True
    bp["layout"]["params"]["retrieval"] = [0.5, 0.9]
    rc, _, err = run_cli(capsys, "build", str(write_yaml(tmp_path / "bad.yaml", bp)))
    assert rc == 2 and "layout.params" in err and "commonsense: 4 scores for 2 retrieval scores" in err


def test_layer_swap_scores_swaps_one_layer_and_restores():
    model = mixarch.build("blueprints/tiny.yaml", dtype=torch.float64)
    ids = torch.randint(0, 256, (1, 12))
    before = model(ids)
    seen = []

    def replacement(index, block):
        return attention_to_lightning(block.mixer, block.ctx, block.mixer.positional)

    def which(m):
        swapped = [i for i, b in enumerate(m.blocks) if isinstance(b.mixer, LightningAttention)]
        seen.append(swapped)
        return float(len(swapped))

    def loss(m):
        return torch.nn.functional.cross_entropy(m(ids)[0, :-1], ids[0, 1:]).item()

    scores = layer_swap_scores(model, replacement, {"count": which, "loss": loss})
    assert seen == [[0], [1], [2], [3]] and scores["count"] == [1.0] * 4
    assert all(math.isfinite(x) for x in scores["loss"])
    assert torch.equal(before, model(ids))


def test_attention_to_lightning_transfers_weights():
    model = build_model(mixarch.resolve("blueprints/tiny.yaml"), dtype=torch.float64)
    teacher = model.blocks[1].mixer  # 4 query heads, 2 KV heads, QK-norm
    student = attention_to_lightning(teacher, model.blocks[1].ctx, teacher.positional)
    assert student.n_kv_heads == 4
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    assert_close("q", teacher.q_proj(x), student.q_proj(x))
    k_t = teacher.k_proj(x).view(2, 5, 2, 16).repeat_interleave(2, dim=2)
    assert_close("k expanded to MHA", k_t, student.k_proj(x).view(2, 5, 4, 16))
    assert torch.equal(student.q_norm.weight, teacher.q_norm.weight)
    assert torch.isfinite(student(x, positions=torch.arange(5).expand(2, 5))).all()
