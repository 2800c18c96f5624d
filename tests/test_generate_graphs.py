"""Decode steps cut into units (mixarch.generate.graphs): the decomposition equals the model's forward, on every
mixer kind; on CUDA the graph replays equal eager steps, with padding, for several steps."""

from __future__ import annotations

import pytest
import torch
from test_generate import HYBRIDS, MIXERS, PROMPTS, hybrid_model, mixer_model

import mixarch
from mixarch.generate import generate, left_pad, prefill
from mixarch.generate.graphs import DecodeStep, Unit, plan
from mixarch.model.hybrid import build_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_plan_groups_fixed_shape_units_into_runs():
    model = hybrid_model("blueprints/sala-tiny.yaml")
    runs = plan(model)
    units = [u for _, group in runs for u in group]
    n = len(model.blocks)
    assert units == [Unit("embed"), *[Unit(k, i) for i in range(n) for k in ("mixer", "ffn")], Unit("head")]
    kinds = [layer.mixer.type for layer in model.resolved.layers]
    for static, group in runs:
        for unit in group:
            assert static == (unit.kind != "mixer" or kinds[unit.layer] == "lightning")
    assert all(a[0] != b[0] for a, b in zip(runs, runs[1:]))  # runs are maximal


def _eager_and_units(model, prompts, steps, *, graphs, device="cpu", force_at=None):
    """Logits of ``steps`` greedy decode steps: through model(...) and through DecodeStep, from one prefill. At
    step ``force_at`` both feed token 11 through the model's own forward (a cache change made outside)."""
    ids, pad = left_pad(prompts, device=device)
    out = []
    for use_units in (False, True):
        with torch.inference_mode():
            logits, cache = prefill(model, ids, pad=pad)
            step = DecodeStep(model, cache, graphs=graphs)
            seen = []
            for i in range(steps):
                tokens = logits.argmax(-1, keepdim=True)
                if i == force_at:
                    logits = model(torch.full_like(tokens, 11), cache=cache, logits_to_keep=1)[:, -1]
                else:
                    logits = step(tokens) if use_units else model(tokens, cache=cache, logits_to_keep=1)[:, -1]
                seen.append(logits.clone())
        out.append(torch.stack(seen))
    return out


@pytest.mark.parametrize("kind", list(MIXERS))
def test_units_equal_the_forward_per_mixer(kind):
    eager, units = _eager_and_units(mixer_model(kind), PROMPTS, 5, graphs=False)
    torch.testing.assert_close(units, eager, rtol=0, atol=0)


@pytest.mark.parametrize("path", HYBRIDS)
def test_units_equal_the_forward_per_blueprint(path):
    eager, units = _eager_and_units(hybrid_model(path), PROMPTS, 5, graphs=False)
    torch.testing.assert_close(units, eager, rtol=0, atol=0)


@CUDA
@pytest.mark.parametrize("path", ["blueprints/sala-tiny.yaml", "blueprints/hypenet-tiny.yaml", "blueprints/tiny.yaml"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_graph_replays_equal_eager_steps_on_cuda(path, dtype):
    model = build_model(mixarch.resolve(path), seed=1, device="cuda", dtype=dtype).eval()
    prompts = [list(range(1, 40)), [5, 6, 7]]  # padding, and sala-tiny past its dense_len
    eager, graphed = _eager_and_units(model, prompts, 24, graphs=True, device="cuda")
    assert torch.isfinite(graphed).all()
    # the same kernels in the same order: equal up to reduction order inside cuBLAS / SDPA heuristics
    torch.testing.assert_close(graphed, eager, rtol=2e-2 if dtype == torch.bfloat16 else 1e-4,
                               atol=2e-2 if dtype == torch.bfloat16 else 1e-4)


@CUDA
def test_generate_with_cuda_graphs_equals_without():
    model = build_model(mixarch.resolve("blueprints/sala-tiny.yaml"), seed=1, device="cuda",
                        dtype=torch.float32).eval()
    prompts = [list(range(1, 40)), [5, 6, 7]]
    plain = generate(model, prompts, max_new_tokens=20, cuda_graphs=False)
    graphed = generate(model, prompts, max_new_tokens=20)  # the default on CUDA
    assert [r.tokens for r in graphed] == [r.tokens for r in plain]


def test_plan_skips_missing_ffns_and_honours_an_ffn_opt_out():
    model = hybrid_model("blueprints/sala-tiny.yaml")
    model.blocks[1].ffn = None  # a block without FFN sublayer
    model.blocks[2].ffn.static_decode = False  # e.g. data-dependent routing
    units = {u: static for static, group in plan(model) for u in group}
    assert Unit("ffn", 1) not in units and units[Unit("ffn", 2)] is False and units[Unit("ffn", 3)] is True
    eager, decomposed = _eager_and_units(model, PROMPTS, 4, graphs=False)
    torch.testing.assert_close(decomposed, eager, rtol=0, atol=0)


@CUDA
def test_replays_follow_cache_changes_made_outside():
    """An eager forward on the cache between graphed steps (a forced token) replaces the Lightning states; the
    next replays must continue from them."""
    model = build_model(mixarch.resolve("blueprints/sala-tiny.yaml"), seed=1, device="cuda",
                        dtype=torch.float32).eval()
    eager, graphed = _eager_and_units(model, [list(range(1, 40)), [5, 6, 7]], 12, graphs=True, device="cuda",
                                      force_at=6)
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)


@CUDA
def test_a_unit_that_cannot_be_captured_runs_eagerly_with_a_warning(monkeypatch):
    from mixarch.mixers.lightning import LightningAttention

    forward = LightningAttention.forward

    def syncing(self, x, **kwargs):  # a host sync: not capturable
        float(x.sum())
        return forward(self, x, **kwargs)

    model = build_model(mixarch.resolve("blueprints/sala-tiny.yaml"), seed=1, device="cuda",
                        dtype=torch.float32).eval()
    prompts = [list(range(1, 40)), [5, 6, 7]]
    plain = generate(model, prompts, max_new_tokens=12, cuda_graphs=False)
    monkeypatch.setattr(LightningAttention, "forward", syncing)
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        graphed = generate(model, prompts, max_new_tokens=12)
    assert [r.tokens for r in graphed] == [r.tokens for r in plain]
