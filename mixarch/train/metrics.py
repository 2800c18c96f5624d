"""Evaluation metrics (torchmetrics, synchronized across ranks): loss and perplexity from summed NLL over
labeled tokens (never a softmax copy of the logits), token accuracy, and accuracy sliced by task parameters."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric, SumMetric
from torchmetrics.utilities import dim_zero_cat


class SlicedAccuracy(Metric):
    """Token accuracy per value of each slice key: ``update(correct [B], total [B], slices [B, K])`` counts
    per example; ``compute() -> [(k, value, accuracy)]`` for every key column ``k`` and value seen."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("total", default=[], dist_reduce_fx="cat")
        self.add_state("slices", default=[], dist_reduce_fx="cat")

    def update(self, correct: torch.Tensor, total: torch.Tensor, slices: torch.Tensor) -> None:
        self.correct.append(correct)
        self.total.append(total)
        self.slices.append(slices)

    def compute(self) -> list[tuple[int, int, float]]:
        if not self.slices:
            return []
        correct, total, slices = (dim_zero_cat(x) for x in (self.correct, self.total, self.slices))
        out = []
        for k in range(slices.shape[1]):
            for value in torch.unique(slices[:, k]).tolist():
                mask = slices[:, k] == value
                n = total[mask].sum()
                if n > 0:
                    out.append((k, int(value), float(correct[mask].sum() / n)))
        return out


class EvalMetrics(torch.nn.Module):
    """``update(logits [B, T, V], labels [B, T], slices [B, K])``; ``compute(slice_keys)`` -> a flat dict of
    ``loss`` (mean NLL per labeled token), ``ppl`` = exp(loss), ``acc`` and ``acc/<key>=<value>``."""

    def __init__(self, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index
        self.nll, self.tokens, self.correct = SumMetric(), SumMetric(), SumMetric()
        self.sliced = SlicedAccuracy()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, slices: torch.Tensor) -> None:
        mask = labels != self.ignore_index
        picked = logits[mask].float()
        target = labels[mask]
        self.nll.update(torch.nn.functional.cross_entropy(picked, target, reduction="sum"))
        self.tokens.update(mask.sum())
        hits = torch.zeros_like(labels, dtype=torch.long)
        hits[mask] = (picked.argmax(-1) == target).long()
        self.correct.update(hits.sum())
        self.sliced.update(hits.sum(1), mask.sum(1), slices)

    def compute(self, slice_keys: tuple[str, ...] = ()) -> dict[str, float]:
        tokens = float(self.tokens.compute())
        if tokens == 0:
            return {}
        loss = float(self.nll.compute()) / tokens
        out = {"loss": loss, "ppl": math.exp(min(loss, 80.0)), "acc": float(self.correct.compute()) / tokens}
        for k, value, acc in self.sliced.compute():
            name = slice_keys[k] if k < len(slice_keys) else f"slice{k}"
            out[f"acc/{name}={value}"] = acc
        return out

    def reset(self) -> None:
        for m in (self.nll, self.tokens, self.correct, self.sliced):
            m.reset()
