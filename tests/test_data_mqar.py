"""MQAR follows zoology's semantics and is deterministic in its seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixarch.data.mqar import MQARDataModule, MQARSplit, generate, power_law
from mixarch.data.segment import IGNORE_INDEX, concat, sample_without_replacement

VOCAB = 256


def test_seeded_and_deterministic():
    split = MQARSplit(seq_len=64, num_kv_pairs=8, num_examples=32)
    a, b, c = generate(split, VOCAB, 1), generate(split, VOCAB, 1), generate(split, VOCAB, 2)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("kv", [1, 4, 16])
def test_zoology_layout_and_labels_only_on_answers(kv):
    t = 64
    seg = generate(MQARSplit(seq_len=t, num_kv_pairs=kv, num_examples=64), VOCAB, 0, random_non_queries=False)
    assert seg.inputs.shape == seg.labels.shape == (64, t)
    assert seg.slices["num_kv_pairs"].tolist() == [kv] * 64
    for x, y in zip(seg.inputs.tolist(), seg.labels.tolist()):
        keys, values = x[0:2 * kv:2], x[1:2 * kv:2]
        pairs = dict(zip(keys, values))
        assert len(set(keys)) == kv and len(set(values)) == kv
        assert all(1 <= k < VOCAB // 2 for k in keys) and all(VOCAB // 2 <= v < VOCAB for v in values)
        labeled = [i for i, label in enumerate(y) if label != IGNORE_INDEX]
        assert len(labeled) == kv and all(i >= 2 * kv and (i - 2 * kv) % 2 == 0 for i in labeled)
        assert sorted(x[i] for i in labeled) == sorted(keys)  # each key queried exactly once
        assert all(y[i] == pairs[x[i]] for i in labeled)  # the label is the queried key's value
        assert all(x[i] == 0 for i in range(2 * kv, t) if i not in labeled)  # nothing else in the queries


def test_random_non_queries_fill_only_the_gaps():
    split = MQARSplit(seq_len=64, num_kv_pairs=4, num_examples=16)
    clean, noisy = generate(split, VOCAB, 0, random_non_queries=False), generate(split, VOCAB, 0)
    assert torch.equal(clean.labels, noisy.labels)
    keep = clean.inputs != 0
    assert torch.equal(clean.inputs[keep], noisy.inputs[keep]) and (noisy.inputs[~keep] != 0).any()


def test_gaps_follow_the_power_law():
    t, kv, n = 64, 1, 4000
    seg = generate(MQARSplit(seq_len=t, num_kv_pairs=kv, num_examples=n), VOCAB, 0, power_a=0.01)
    gaps = ((seg.labels != IGNORE_INDEX).float().argmax(1) - 2 * kv) // 2
    space = (t - 2 * kv) // 2
    observed = np.bincount(gaps.numpy(), minlength=space) / n
    expected = power_law(space, 0.01)
    assert np.abs(observed - expected).max() < 0.03
    assert observed[0] > 3 * observed[space // 2]  # small gaps likelier, roughly 1 / g


def test_sample_without_replacement_matches_weighted_choice():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    draws = sample_without_replacement(rng, 20000, 4, 2, p=p)
    assert (draws[:, 0] != draws[:, 1]).all()
    first = np.bincount(draws[:, 0], minlength=4) / 20000
    assert np.abs(first - p).max() < 0.015
    # second draw given the first is p renormalized without it: P(second == 1 | first == 0) = 0.3 / 0.5
    assert abs((draws[draws[:, 0] == 0, 1] == 1).mean() - 0.6) < 0.02


def test_preconditions_and_padding():
    with pytest.raises(ValueError, match="num_kv_pairs"):
        generate(MQARSplit(seq_len=32, num_kv_pairs=9, num_examples=1), VOCAB, 0)
    with pytest.raises(ValueError, match="vocab_size"):
        generate(MQARSplit(seq_len=64, num_kv_pairs=4, num_examples=1), 64, 0)
    a = generate(MQARSplit(seq_len=16, num_kv_pairs=2, num_examples=3), VOCAB, 0)
    b = generate(MQARSplit(seq_len=32, num_kv_pairs=4, num_examples=2), VOCAB, 0)
    both = concat([a, b])
    assert both.inputs.shape == (5, 32) and (both.labels[:3, 16:] == IGNORE_INDEX).all()
    assert both.slices["seq_len"].tolist() == [16, 16, 16, 32, 32]


def test_datamodule_splits_are_independent_and_batched():
    dm = MQARDataModule([{"seq_len": 32, "num_kv_pairs": 4, "num_examples": 40}],
                        [{"seq_len": 32, "num_kv_pairs": n, "num_examples": 8} for n in (2, 4)],
                        vocab_size=VOCAB, batch_size=8)
    dm.setup("fit")
    dm.setup("test")
    assert dm.slice_keys == ("num_kv_pairs", "seq_len")
    assert not torch.equal(dm.datasets["val"].segment.inputs, dm.datasets["test"].segment.inputs)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (8, 32) and batch["slices"].shape == (8, 2)
    assert len(dm.train_dataloader()) == 5
