"""Token-level passkey retrieval (the Landmark prompt over a synthetic vocabulary).

A fixed filler "sentence" (``filler_len`` random tokens, the same for every example) repeats to fill the
sequence; at ``depth`` (a fraction of the haystack) sits ``PASS k_1 .. k_L END`` with a random key of
``key_len`` digit tokens; the sequence ends with ``QUERY k_1 .. k_L``. Labels: at ``QUERY`` predict k_1,
at k_i predict k_(i+1) -- only the answer positions are labeled. Vocabulary: 0 pad, 1 PASS, 2 END,
3 QUERY, 4..13 digits, 14.. filler.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from mixarch.data.segment import IGNORE_INDEX, Segment
from mixarch.data.synthetic import SyntheticDataModule, splits

PASS, END, QUERY, DIGIT0, FILLER0 = 1, 2, 3, 4, 14


class PasskeySplit(BaseModel):
    """``num_examples`` sequences of ``seq_len`` tokens with the key at ``depth`` (0: start, 1: end)."""

    model_config = ConfigDict(extra="forbid")
    seq_len: PositiveInt
    depth: float = Field(ge=0, le=1)
    num_examples: PositiveInt


def insert_needles(haystack: np.ndarray, needles: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``haystack`` [N, H] with needle ``needles[:, j]`` [N, L] inserted before haystack offset
    ``starts[:, j]`` (any order); returns [N, H + J * L]."""
    order = np.argsort(starts, axis=1, kind="stable")
    out = []
    for i in range(haystack.shape[0]):
        parts, prev = [], 0
        for j in order[i]:
            parts += [haystack[i, prev:starts[i, j]], needles[i, j]]
            prev = starts[i, j]
        parts.append(haystack[i, prev:])
        out.append(np.concatenate(parts))
    return np.stack(out)


def answer_block(query: np.ndarray, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``query`` [N, Q] and ``answer`` [N, A] -> inputs [N, Q + A - 1] (the query, then the answer but its
    last token) and labels (the answer, from the last query token on; the query positions before ignored)."""
    n, q = query.shape
    inputs = np.concatenate([query, answer[:, :-1]], axis=1)
    labels = np.full(inputs.shape, IGNORE_INDEX, dtype=np.int64)
    labels[:, q - 1:] = answer
    return inputs, labels


def check(split: PasskeySplit, vocab_size: int, key_len: int, filler_len: int) -> None:
    if vocab_size < FILLER0 + filler_len:
        raise ValueError(f"vocab_size ({vocab_size}) must be at least {FILLER0 + filler_len} "
                         f"(14 special and digit tokens + filler_len)")
    if split.seq_len < 2 * key_len + 4:
        raise ValueError(f"seq_len ({split.seq_len}) is too short for a key of {key_len} tokens")


def generate(split: PasskeySplit, vocab_size: int, seed: int, key_len: int = 5, filler_len: int = 16) -> Segment:
    """The examples of ``split`` (deterministic in ``seed``); slices ``depth_pct`` and ``seq_len``."""
    check(split, vocab_size, key_len, filler_len)
    rng = np.random.default_rng(seed)
    n, t = split.num_examples, split.seq_len
    sentence = FILLER0 + np.random.default_rng(0).choice(vocab_size - FILLER0, filler_len, replace=False)
    key = DIGIT0 + rng.integers(0, 10, size=(n, key_len))
    needle = np.concatenate([np.full((n, 1), PASS), key, np.full((n, 1), END)], axis=1)
    tail_inputs, tail_labels = answer_block(np.full((n, 1), QUERY), key)
    hay_len = t - needle.shape[1] - tail_inputs.shape[1]
    offset = rng.integers(0, filler_len, size=(n, 1))  # where in the sentence the haystack begins
    haystack = sentence[(offset + np.arange(hay_len)) % filler_len]
    starts = np.full((n, 1), round(split.depth * hay_len))
    return depth_segment(insert_needles(haystack, needle[:, None], starts), tail_inputs, tail_labels, split.depth)


def depth_segment(body: np.ndarray, tail_inputs: np.ndarray, tail_labels: np.ndarray, depth: float) -> Segment:
    """``body`` [N, Tb] (unlabeled) followed by the question/answer tail; slices ``depth_pct`` and ``seq_len``."""
    n = body.shape[0]
    inputs = np.concatenate([body, tail_inputs], axis=1)
    labels = np.concatenate([np.full(body.shape, IGNORE_INDEX), tail_labels], axis=1)
    slices = {"depth_pct": torch.full((n,), round(100 * depth)), "seq_len": torch.full((n,), inputs.shape[1])}
    return Segment(torch.from_numpy(inputs), torch.from_numpy(labels), slices)


def grid(seq_lens: list[int], depths: list[float], num_examples: int) -> tuple[dict, ...]:
    """Groups for every length and depth (plain dicts, so that LightningCLI can print the defaults)."""
    return tuple({"seq_len": t, "depth": d, "num_examples": num_examples} for t in seq_lens for d in depths)


DEFAULT_TRAIN = grid([128], [i / 10 for i in range(11)], 1000)
DEFAULT_VAL = grid([128, 256], [0.0, 0.25, 0.5, 0.75, 1.0], 64)


class PasskeyDataModule(SyntheticDataModule):
    """Passkey splits (``test_splits`` default to ``val_splits`` with other seeds); accuracy is sliced by
    ``depth_pct`` and ``seq_len``."""

    def __init__(self, train_splits: list[PasskeySplit] = DEFAULT_TRAIN,
                 val_splits: list[PasskeySplit] = DEFAULT_VAL,
                 test_splits: list[PasskeySplit] | None = None, key_len: PositiveInt = 5,
                 filler_len: PositiveInt = 16, *, vocab_size: int | None = None, batch_size: int = 32,
                 val_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__(vocab_size=vocab_size, batch_size=batch_size, val_batch_size=val_batch_size,
                         num_workers=num_workers, seed=seed)
        self.splits = splits(PasskeySplit, train_splits, val_splits, test_splits)
        self.key_len, self.filler_len = key_len, filler_len

    def make(self, group: PasskeySplit, vocab_size: int, seed: int) -> Segment:
        return generate(group, vocab_size, seed, self.key_len, self.filler_len)
