"""A generated split of a token-level task: inputs, labels on answer positions only, and slice keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE_INDEX = -100


@dataclass
class Segment:
    """``inputs`` [N, T] int64; ``labels`` [N, T] int64, the token to predict at each position or
    ``IGNORE_INDEX``; ``slices`` name -> [N] int64, the task parameters to slice accuracy by."""

    inputs: torch.Tensor
    labels: torch.Tensor
    slices: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.inputs.shape[0]


def concat(segments: list[Segment], pad_id: int = 0) -> Segment:
    """Segments of different lengths in one, right-padded to the longest (padding is never labeled)."""
    if not segments:
        raise ValueError("no segments to concatenate")
    t = max(s.inputs.shape[1] for s in segments)
    keys = sorted({k for s in segments for k in s.slices})
    inputs, labels, slices = [], [], {k: [] for k in keys}
    for s in segments:
        pad = t - s.inputs.shape[1]
        inputs.append(torch.nn.functional.pad(s.inputs, (0, pad), value=pad_id))
        labels.append(torch.nn.functional.pad(s.labels, (0, pad), value=IGNORE_INDEX))
        for k in keys:
            slices[k].append(s.slices.get(k, torch.full((len(s),), -1, dtype=torch.long)))
    return Segment(torch.cat(inputs), torch.cat(labels), {k: torch.cat(v) for k, v in slices.items()})


def sample_without_replacement(rng: np.random.Generator, n_rows: int, population: int, k: int,
                               p: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """``[n_rows, k]`` indices into ``range(population)``, distinct within a row, in random order.

    With probabilities ``p`` [population] this is successive sampling without replacement (as
    ``rng.choice(population, k, replace=False, p=p)``), drawn for all rows at once by the Gumbel top-k trick.
    """
    if k > population:
        raise ValueError(f"cannot draw {k} distinct values from {population}")
    out = np.empty((n_rows, k), dtype=np.int64)
    log_p = np.log(p) if p is not None else None
    for start in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - start)
        scores = rng.gumbel(size=(rows, population))
        if log_p is not None:
            scores += log_p
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + rows] = np.take_along_axis(top, order, axis=1)
    return out
