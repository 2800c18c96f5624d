"""Multi-query associative recall (MQAR) with the semantics of zoology's ``multiquery_ar``.

An example of ``seq_len`` tokens starts with ``num_kv_pairs`` key-value pairs (keys from the lower half of
the vocabulary without token 0, values from the upper half, distinct within an example), followed by a
query region where each key appears once more at an even offset ``2 * gap``; gaps are drawn without
replacement with power-law probabilities ``p(g) ~ power_a * g ** (power_a - 1)`` (g = 1..space, small gaps
likelier). The label of a query key's position is its value; every other label is ignored. Other positions
of the query region hold random tokens (``random_non_queries``) or 0.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt

from mixarch.data.segment import IGNORE_INDEX, Segment, sample_without_replacement
from mixarch.data.synthetic import SyntheticDataModule, splits


class MQARSplit(BaseModel):
    """One group of examples: ``num_examples`` sequences of ``seq_len`` tokens with ``num_kv_pairs`` pairs."""

    model_config = ConfigDict(extra="forbid")
    seq_len: PositiveInt
    num_kv_pairs: PositiveInt
    num_examples: PositiveInt


def check(split: MQARSplit, vocab_size: int) -> None:
    """zoology's preconditions, as a ValueError naming the offending field."""
    if split.seq_len % 2:
        raise ValueError(f"seq_len must be even (got {split.seq_len})")
    if 4 * split.num_kv_pairs > split.seq_len:
        raise ValueError(f"num_kv_pairs ({split.num_kv_pairs}) x 4 must be <= seq_len ({split.seq_len})")
    if vocab_size <= split.seq_len:
        raise ValueError(f"vocab_size ({vocab_size}) must be larger than seq_len ({split.seq_len})")
    if vocab_size // 2 - 1 < split.num_kv_pairs:
        raise ValueError(f"vocab_size ({vocab_size}) has too few keys for num_kv_pairs ({split.num_kv_pairs})")


def power_law(space: int, power_a: float) -> np.ndarray:
    """``p[g-1] ~ power_a * g ** (power_a - 1)`` for g = 1..space, normalized."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def generate(split: MQARSplit, vocab_size: int, seed: int, power_a: float = 0.01,
             random_non_queries: bool = True) -> Segment:
    """The examples of ``split`` (deterministic in ``seed``); slices ``num_kv_pairs`` and ``seq_len``."""
    check(split, vocab_size)
    rng = np.random.default_rng(seed)
    n, t, kv = split.num_examples, split.seq_len, split.num_kv_pairs
    context = 2 * kv
    key_vocab = vocab_size // 2
    keys = 1 + sample_without_replacement(rng, n, key_vocab - 1, kv)
    values = key_vocab + sample_without_replacement(rng, n, vocab_size - key_vocab, kv)
    space = (t - context) // 2
    gaps = sample_without_replacement(rng, n, space, kv, p=power_law(space, power_a))

    seq = np.zeros((n, t + 1), dtype=np.int64)
    seq[:, 0:context:2], seq[:, 1:context:2] = keys, values
    rows = np.arange(n)[:, None]
    seq[rows, context + 2 * gaps] = keys
    labels = np.full((n, t + 1), IGNORE_INDEX, dtype=np.int64)
    labels[rows, context + 2 * gaps + 1] = values
    inputs, labels = seq[:, :-1], labels[:, 1:]
    if random_non_queries:
        noise = rng.integers(0, vocab_size, size=inputs.shape)
        inputs = np.where(inputs == 0, noise, inputs)
    slices = {"num_kv_pairs": torch.full((n,), kv), "seq_len": torch.full((n,), t)}
    return Segment(torch.from_numpy(inputs), torch.from_numpy(labels), slices)


# plain dicts, so that LightningCLI can print the defaults
DEFAULT_TRAIN = tuple({"seq_len": 64, "num_kv_pairs": n, "num_examples": 8000} for n in (2, 4, 8, 16))
DEFAULT_VAL = tuple({"seq_len": 64, "num_kv_pairs": n, "num_examples": 256} for n in (2, 4, 8, 16))


class MQARDataModule(SyntheticDataModule):
    """MQAR splits (``test_splits`` default to ``val_splits`` with other seeds); accuracy is sliced by
    ``num_kv_pairs`` and ``seq_len``."""

    def __init__(self, train_splits: list[MQARSplit] = DEFAULT_TRAIN, val_splits: list[MQARSplit] = DEFAULT_VAL,
                 test_splits: list[MQARSplit] | None = None, power_a: PositiveFloat = 0.01,
                 random_non_queries: bool = True, *, vocab_size: int | None = None, batch_size: int = 64,
                 val_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__(vocab_size=vocab_size, batch_size=batch_size, val_batch_size=val_batch_size,
                         num_workers=num_workers, seed=seed)
        self.splits = splits(MQARSplit, train_splits, val_splits, test_splits)
        self.power_a, self.random_non_queries = power_a, random_non_queries

    def make(self, group: MQARSplit, vocab_size: int, seed: int) -> Segment:
        return generate(group, vocab_size, seed, self.power_a, self.random_non_queries)
