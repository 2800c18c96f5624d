"""Token-level needle in a haystack with RULER's download-free ``noise`` haystack variant.

The haystack is i.i.d. noise tokens; ``num_needles`` needles ``NEEDLE key SEP value`` (random keys of
``key_len`` tokens, values of ``value_len`` tokens, distinct keys) are placed at random depths, one of them
(the queried one) at ``depth``. The sequence ends with ``QUERY key SEP value``; labels only on the value
(predicted from ``SEP`` on). Vocabulary: 0 pad, 1 NEEDLE, 2 SEP, 3 QUERY, 4.. keys, values and noise.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from mixarch.data.passkey import answer_block, depth_segment, grid, insert_needles
from mixarch.data.segment import Segment, sample_without_replacement
from mixarch.data.synthetic import SyntheticDataModule, splits

NEEDLE, SEP, QUERY, FIRST = 1, 2, 3, 4


class NIAHSplit(BaseModel):
    """``num_examples`` sequences of ``seq_len`` tokens; the queried needle at ``depth`` (0: start, 1: end)."""

    model_config = ConfigDict(extra="forbid")
    seq_len: PositiveInt
    depth: float = Field(ge=0, le=1)
    num_examples: PositiveInt


def check(split: NIAHSplit, vocab_size: int, num_needles: int, key_len: int, value_len: int) -> None:
    if vocab_size - FIRST < 16:
        raise ValueError(f"vocab_size ({vocab_size}) is too small (at least {FIRST + 16})")
    used = num_needles * (key_len + value_len + 2) + key_len + value_len + 1
    if split.seq_len < used + 1:
        raise ValueError(f"seq_len ({split.seq_len}) is too short for {num_needles} needle(s) ({used} tokens)")


def generate(split: NIAHSplit, vocab_size: int, seed: int, num_needles: int = 1, key_len: int = 2,
             value_len: int = 3) -> Segment:
    """The examples of ``split`` (deterministic in ``seed``); slices ``depth_pct`` and ``seq_len``."""
    check(split, vocab_size, num_needles, key_len, value_len)
    rng = np.random.default_rng(seed)
    n, t, m = split.num_examples, split.seq_len, num_needles
    tokens = vocab_size - FIRST
    # distinct keys: distinct first tokens
    firsts = FIRST + sample_without_replacement(rng, n, tokens, m)
    keys = np.concatenate([firsts[..., None], FIRST + rng.integers(0, tokens, (n, m, key_len - 1))], axis=2)
    values = FIRST + rng.integers(0, tokens, (n, m, value_len))
    needles = np.concatenate([np.full((n, m, 1), NEEDLE), keys, np.full((n, m, 1), SEP), values], axis=2)
    query = np.concatenate([np.full((n, 1), QUERY), keys[:, 0], np.full((n, 1), SEP)], axis=1)
    tail_inputs, tail_labels = answer_block(query, values[:, 0])
    hay_len = t - m * needles.shape[2] - tail_inputs.shape[1]
    haystack = FIRST + rng.integers(0, tokens, (n, hay_len))
    starts = np.concatenate([np.full((n, 1), round(split.depth * hay_len)),
                             rng.integers(0, hay_len + 1, (n, m - 1))], axis=1)
    return depth_segment(insert_needles(haystack, needles, starts), tail_inputs, tail_labels, split.depth)


DEFAULT_TRAIN = grid([128], [i / 10 for i in range(11)], 1000)
DEFAULT_VAL = grid([128, 256], [0.0, 0.25, 0.5, 0.75, 1.0], 64)


class NIAHDataModule(SyntheticDataModule):
    """Noise-haystack NIAH splits (``test_splits`` default to ``val_splits`` with other seeds); accuracy is
    sliced by ``depth_pct`` and ``seq_len``."""

    def __init__(self, train_splits: list[NIAHSplit] = DEFAULT_TRAIN,
                 val_splits: list[NIAHSplit] = DEFAULT_VAL,
                 test_splits: list[NIAHSplit] | None = None, num_needles: PositiveInt = 1,
                 key_len: PositiveInt = 2, value_len: PositiveInt = 3, *, vocab_size: int | None = None,
                 batch_size: int = 32, val_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__(vocab_size=vocab_size, batch_size=batch_size, val_batch_size=val_batch_size,
                         num_workers=num_workers, seed=seed)
        self.splits = splits(NIAHSplit, train_splits, val_splits, test_splits)
        self.num_needles, self.key_len, self.value_len = num_needles, key_len, value_len

    def make(self, group: NIAHSplit, vocab_size: int, seed: int) -> Segment:
        return generate(group, vocab_size, seed, self.num_needles, self.key_len, self.value_len)
