"""Token-level passkey retrieval and noise-haystack NIAH: answers only are labeled, needles at their depth."""

from __future__ import annotations

import pytest
import torch

from mixarch.data import niah, passkey
from mixarch.data.segment import IGNORE_INDEX


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey(depth):
    t, key_len = 64, 5
    seg = passkey.generate(passkey.PasskeySplit(seq_len=t, depth=depth, num_examples=16), 100, 7, key_len=key_len)
    assert seg.inputs.shape == (16, t) and seg.slices["depth_pct"].tolist() == [round(100 * depth)] * 16
    assert torch.equal(seg.inputs, passkey.generate(passkey.PasskeySplit(seq_len=t, depth=depth, num_examples=16),
                                                    100, 7, key_len=key_len).inputs)
    hay = t - (key_len + 2) - key_len
    for x, y in zip(seg.inputs.tolist(), seg.labels.tolist()):
        start = x.index(passkey.PASS)
        assert start == round(depth * hay) and x[start + key_len + 1] == passkey.END
        key = x[start + 1:start + 1 + key_len]
        assert all(passkey.DIGIT0 <= d < passkey.DIGIT0 + 10 for d in key)
        q = x.index(passkey.QUERY)
        assert q == t - key_len and x[q + 1:] == key[:-1]
        assert y[q:] == key and all(label == IGNORE_INDEX for label in y[:q])
        filler = [tok for i, tok in enumerate(x[:q]) if not start <= i <= start + key_len + 1]
        assert min(filler) >= passkey.FILLER0


@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_niah_noise_haystack(depth):
    t, m, kl, vl = 96, 3, 2, 3
    seg = niah.generate(niah.NIAHSplit(seq_len=t, depth=depth, num_examples=16), 64, 1, num_needles=m,
                        key_len=kl, value_len=vl)
    assert seg.inputs.shape == (16, t)
    hay = t - m * (kl + vl + 2) - (kl + vl + 1)
    for x, y in zip(seg.inputs.tolist(), seg.labels.tolist()):
        q = x.index(niah.QUERY)
        key = x[q + 1:q + 1 + kl]
        needles = [i for i, tok in enumerate(x[:q]) if tok == niah.NEEDLE]
        assert len(needles) == m and len({tuple(x[i + 1:i + 1 + kl]) for i in needles}) == m
        target = next(i for i in needles if x[i + 1:i + 1 + kl] == key)
        value = x[target + kl + 2:target + kl + 2 + vl]
        haystack_before = target - sum(1 for i in needles if i < target) * (kl + vl + 2)
        assert haystack_before == round(depth * hay)
        labeled = [i for i, label in enumerate(y) if label != IGNORE_INDEX]
        assert labeled == list(range(t - vl, t)) and [y[i] for i in labeled] == value
        assert x[q + kl + 1] == niah.SEP and x[q + kl + 2:] == value[:-1]


def test_too_short_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        niah.generate(niah.NIAHSplit(seq_len=20, depth=0.5, num_examples=1), 64, 0, num_needles=3)
    with pytest.raises(ValueError, match="vocab_size"):
        passkey.generate(passkey.PasskeySplit(seq_len=64, depth=0.5, num_examples=1), 20, 0)
