"""Choosing the next token from logits ``[B, V]``: greedy, temperature, top-k, top-p.

Every function is pure (the logits are never modified in place) and takes per-row settings, so one batch can
mix requests with different parameters. Sampled rows draw from their own ``torch.Generator``, which makes a
seeded request reproducible whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is continued.

    ``temperature`` 0 is greedy (argmax; ``top_k``, ``top_p`` and ``seed`` are then unused). ``top_k`` keeps
    the ``k`` most likely tokens (None: all), ``top_p`` the smallest set whose probability reaches ``p``
    (None or 1: all). ``seed`` seeds the row's generator (None: drawn from torch's global generator). ``stop``: token
    ids that end the sequence (not included in the output). ``max_new_tokens``: at most this many tokens.
    """

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: frozenset[int] = frozenset()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        object.__setattr__(self, "stop", frozenset(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def top_k_filter(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``-inf`` outside each row's ``k`` largest logits (ties with the k-th are kept); ``k`` ``[B]``, 0 = all."""
    vocab = logits.shape[-1]
    k = torch.where((k <= 0) | (k > vocab), vocab, k).to(device=logits.device, dtype=torch.long)
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, (k - 1).unsqueeze(-1))
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``-inf`` outside each row's nucleus: the most likely tokens whose probability first reaches ``p``
    (``p`` ``[B]`` in (0, 1]; 1 = all). The most likely token is always kept."""
    p = p.to(device=logits.device, dtype=torch.float32).unsqueeze(-1)
    ordered, order = logits.sort(dim=-1, descending=True)
    probs = ordered.float().softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
    drop_sorted = (before >= p) & (p < 1)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row ``[B]`` from ``softmax(logits)`` (``-inf`` = excluded), row ``b`` drawing from
    ``generators[b]`` (on the logits' device)."""
    probs = logits.float().softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(generators)])


def next_tokens(logits: torch.Tensor, params: Sequence[SamplingParams],
                generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """The next token of every row ``[B]`` (int64): the argmax for greedy rows; for the others a draw from
    the tempered distribution restricted by ``top_k`` and ``top_p`` (``generators[b]`` is None for greedy
    rows)."""
    out = logits.argmax(dim=-1)
    rows = [b for b, sp in enumerate(params) if not sp.greedy]
    if not rows:
        return out
    picked = logits[rows].float()
    device = logits.device
    temperature = torch.tensor([params[b].temperature for b in rows], device=device)
    picked = picked / temperature.unsqueeze(-1)
    if any(params[b].top_k for b in rows):
        picked = top_k_filter(picked, torch.tensor([params[b].top_k or 0 for b in rows], device=device))
    top_p = [params[b].top_p or 1.0 for b in rows]
    if min(top_p) < 1:
        picked = top_p_filter(picked, torch.tensor(top_p, device=device))
    out[rows] = sample(picked, [generators[b] for b in rows])
    return out
