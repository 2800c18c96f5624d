"""Sampling functions on logits [B, V]: top-k / top-p keep exactly the allowed tokens, sampling stays inside
them, seeds reproduce; and incremental text with stop strings."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from mixarch.generate import SamplingParams, TextStream
from mixarch.generate.sampling import next_tokens, top_k_filter, top_p_filter
from mixarch.generate.tokenizer import ByteTextTokenizer
from mixarch.testing.strategies import seeded_randn, seeds

vocab_sizes = st.sampled_from([1, 2, 7, 61, 256])


@given(seed=seeds, vocab=vocab_sizes, k=st.integers(1, 300))
def test_top_k_keeps_the_k_largest(seed, vocab, k):
    logits = seeded_randn((3, vocab), seed)
    kept = torch.isfinite(top_k_filter(logits, torch.tensor([k, 0, 1])))
    assert kept.sum(-1).tolist() == [min(k, vocab), vocab, 1]
    order = logits.argsort(dim=-1, descending=True)
    assert kept[0, order[0, :min(k, vocab)]].all()


@given(seed=seeds, vocab=vocab_sizes, p=st.floats(0.01, 1.0), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_top_p_keeps_the_smallest_nucleus(seed, vocab, p, scale):
    logits = seeded_randn((1, vocab), seed, scale=scale)
    kept = torch.isfinite(top_p_filter(logits, torch.tensor([p])))[0]
    probs = logits.softmax(-1)[0]
    assert kept[probs.argmax()]
    if not kept.all():
        assert probs[kept].min() >= probs[~kept].max()  # the most likely tokens
    if p < 1:
        mass = probs[kept].sum().item()
        assert mass >= p - 1e-6 or kept.all()
        assert mass - probs[kept].min().item() < p + 1e-6  # minimal: without its least likely token it is short
    else:
        assert kept.all()


@given(seed=seeds, k=st.integers(1, 5), p=st.floats(0.05, 1.0))
def test_samples_stay_inside_top_k_and_top_p(seed, k, p):
    logits = seeded_randn((4, 61), seed, scale=3.0)
    temperatures = (0.5, 1.0, 2.0, 1.0)
    params = [SamplingParams(temperature=t, top_k=k, top_p=p) for t in temperatures]
    tempered = logits / torch.tensor(temperatures).unsqueeze(-1)
    allowed = torch.isfinite(top_p_filter(top_k_filter(tempered, torch.full((4,), k)), torch.full((4,), p)))
    gens = [torch.Generator().manual_seed(seed + b) for b in range(4)]
    for _ in range(5):
        tokens = next_tokens(logits, params, gens)
        assert allowed.gather(-1, tokens.unsqueeze(-1)).all()


def test_seeded_rows_reproduce_and_greedy_rows_take_the_argmax():
    logits = seeded_randn((3, 256), 0)
    params = [SamplingParams(temperature=1.0, seed=1), SamplingParams(), SamplingParams(temperature=1.0, seed=2)]

    def draw(n):
        gens = [torch.Generator().manual_seed(1), None, torch.Generator().manual_seed(2)]
        return torch.stack([next_tokens(logits, params, gens) for _ in range(n)])

    first, second = draw(20), draw(20)
    assert torch.equal(first, second)
    assert (first[:, 1] == logits[1].argmax()).all()
    assert not torch.equal(first[:, 0], first[:, 2])


def byte_text(text: str, stop=()) -> tuple[list[str], str, bool]:
    stream = TextStream(ByteTextTokenizer(), stop)
    pieces = [stream.push(b) for b in text.encode("utf-8")]
    return pieces, "".join(pieces) + stream.flush(), stream.stopped


def test_text_stream_holds_back_incomplete_characters():
    pieces, text, stopped = byte_text("a€b")
    assert pieces == ["a", "", "", "€", "b"] and text == "a€b" and not stopped


def test_text_stream_stop_strings():
    pieces, text, stopped = byte_text("hello world. bye", stop=["world", "ye"])
    assert text == "hello " and stopped
    assert "".join(pieces) == "hello "
    _, text, stopped = byte_text("ab wor wo", stop=["world"])  # held-back prefixes are released at the end
    assert text == "ab wor wo" and not stopped
    pieces, _, _ = byte_text("xwoy", stop=["wo!"])
    assert pieces == ["x", "", "", "woy"]
