"""Generation over the hybrid cache: greedy == argmax of the full forward for every mixer kind, batching,
chunked prefill, stop tokens, sampling, streaming."""

from __future__ import annotations

import pytest
import torch

import mixarch
from mixarch.generate import SamplingParams, generate, left_pad, prefill, stream
from mixarch.model.hybrid import build_model
from mixarch.testing.mixers import tiny_resolved

# InfLLM-V2 at toy size: blocks of 4, dense below 12 keys (= topk * block_size, so prefill and decode agree)
INFLLM = {"n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "block_size": 4, "kernel_size": 4, "kernel_stride": 2,
          "init_blocks": 1, "local_blocks": 1, "topk": 3, "dense_len": 12}
MIXERS = {
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "sliding_window": {"n_heads": 4, "n_kv_heads": 2, "window": 5},
    "lightning": {"n_heads": 4},
    "infllm_v2": INFLLM,
    "gla": {"n_heads": 2},
    "short_conv": {"kernel_size": 3},
}
HYBRIDS = ["blueprints/tiny.yaml", "blueprints/sala-tiny.yaml", "blueprints/hypenet-tiny.yaml",
           "blueprints/gla-hybrid-tiny.yaml"]
PROMPTS = [[3, 1, 4, 1, 5], list(range(7, 21)), [9]]  # lengths 5, 14, 1: padding, and past dense_len with decode


def peaked(resolved):
    """``resolved`` with init_std 0.5: a random model whose greedy continuations vary (at 0.02 they repeat)."""
    return resolved.model_copy(update={"model": resolved.model.model_copy(update={"init_std": 0.5})})


def mixer_model(kind: str):
    return build_model(peaked(tiny_resolved([(kind, MIXERS[kind])] * 2)), seed=1).double()


def hybrid_model(path: str):
    return build_model(peaked(mixarch.resolve(path)), seed=1).double()


def assert_greedy_is_argmax(model, prompt: list[int], tokens: list[int]) -> None:
    """Each generated token is the argmax of a full forward (no cache) over the prompt and what precedes it."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens]))[0]
    want = logits[len(prompt) - 1:-1].argmax(-1).tolist()
    assert tokens == want


@pytest.mark.parametrize("kind", list(MIXERS))
def test_greedy_equals_full_forward_argmax_per_mixer(kind):
    model = mixer_model(kind)
    results = generate(model, PROMPTS, max_new_tokens=12, prefill_chunk=4)
    for prompt, result in zip(PROMPTS, results):
        assert len(result.tokens) == 12 and result.finish_reason == "length"
        assert_greedy_is_argmax(model, prompt, result.tokens)


@pytest.mark.parametrize("path", HYBRIDS)
def test_hybrid_blueprints_greedy_batch_chunked_equals_alone(path):
    model = hybrid_model(path)
    prompts = [list(range(1, 40)), [5, 6, 7]]  # sala-tiny turns sparse at 32 keys
    batched = generate(model, prompts, max_new_tokens=8)
    chunked = generate(model, prompts, max_new_tokens=8, prefill_chunk=7)
    for prompt, one, two in zip(prompts, batched, chunked):
        alone = generate(model, [prompt], max_new_tokens=8)[0]
        assert one.tokens == two.tokens == alone.tokens
        assert_greedy_is_argmax(model, prompt, one.tokens)


def test_sampling_per_row_seed_is_independent_of_the_batch():
    model = mixer_model("lightning")
    params = [SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7),
              SamplingParams(max_new_tokens=6, temperature=0.7, top_k=5, seed=8),
              SamplingParams(max_new_tokens=4)]
    together = generate(model, PROMPTS, params=params)
    alone = [generate(model, [p], params=[sp])[0] for p, sp in zip(PROMPTS, params)]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [len(r.tokens) for r in together] == [10, 6, 4]
    again = generate(model, PROMPTS[:1], max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    other = generate(model, PROMPTS[:1], max_new_tokens=10, temperature=1.0, top_p=0.9, seed=70)
    assert again[0].tokens == together[0].tokens != other[0].tokens


def test_stop_tokens_end_each_row_on_its_own():
    model = mixer_model("attention")
    free = generate(model, PROMPTS[:2], max_new_tokens=12)
    stop = free[0].tokens[4]
    first = free[0].tokens.index(stop)
    stopped = generate(model, PROMPTS[:2], max_new_tokens=12, stop=[stop])
    assert stopped[0].tokens == free[0].tokens[:first] and stopped[0].finish_reason == "stop"
    if stop in free[1].tokens:
        assert stopped[1].tokens == free[1].tokens[:free[1].tokens.index(stop)]
    else:
        assert stopped[1].tokens == free[1].tokens and stopped[1].finish_reason == "length"


def test_stream_equals_generate_and_reports_each_finish_once():
    model = mixer_model("infllm_v2")
    params = [SamplingParams(max_new_tokens=n, temperature=t, seed=3) for n, t in ((9, 0.0), (3, 1.0), (6, 0.5))]
    results = generate(model, PROMPTS, params=params)
    tokens = [[] for _ in PROMPTS]
    finishes = [[] for _ in PROMPTS]
    steps = list(stream(model, PROMPTS, params=params))
    for step in steps:
        for b, (t, r) in enumerate(zip(step.tokens, step.finish_reasons)):
            if t is not None:
                tokens[b].append(t)
            if r is not None:
                finishes[b].append((len(tokens[b]), r))
    assert tokens == [r.tokens for r in results]
    assert finishes == [[(9, "length")], [(3, "length")], [(6, "length")]]
    assert len(steps) == 9


def test_generation_restores_the_model_mode_and_checks_inputs():
    model = mixer_model("attention").train()
    generate(model, PROMPTS, max_new_tokens=2)
    assert model.training
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        stream(model, [[1, 61]])
    with pytest.raises(ValueError, match="prefill_chunk"):
        stream(model, [[1]], prefill_chunk=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)


def test_left_pad():
    ids, pad = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and pad.tolist() == [0, 2]
    assert left_pad([[1], [2]])[1] is None


def test_chunked_prefill_cache_lightning_constant_sparse_grows():
    model = hybrid_model("blueprints/sala-tiny.yaml")
    sizes = {}
    for n in (20, 60):
        _, cache = prefill(model, torch.arange(n).unsqueeze(0) % 256, chunk=16)
        sizes[n] = [layer.nbytes() for layer in cache.layers]
    kinds = [layer.mixer.type for layer in model.resolved.layers]
    for i, kind in enumerate(kinds):
        if kind == "lightning":
            assert sizes[20][i] == sizes[60][i] == 4 * 16 * 16 * 8  # one [H, D, D] fp64 state (H 4, D 16)
        else:
            assert sizes[60][i] > 2.9 * sizes[20][i]  # K/V (and compressed keys) of every token


@pytest.mark.parametrize("source", [*MIXERS, *HYBRIDS])
def test_decode_steps_read_only_the_new_tokens_on_the_host(source):
    """Each host read of a tensor value is a device sync on a GPU; a decode step makes exactly one (the new
    tokens), so the host queues every layer's kernels without waiting (checked past dense_len too)."""
    from mixarch.testing.syncs import host_reads

    model = hybrid_model(source) if source.endswith(".yaml") else mixer_model(source)
    steps = stream(model, [list(range(1, 15))], max_new_tokens=12)
    next(steps)
    with host_reads() as reads:
        for _ in range(10):
            next(steps)
    assert dict(reads) == {next(iter(reads)): 10} and next(iter(reads)).startswith("generate/generate.py"), \
        f"host reads per 10 decode steps: {dict(reads)}"
