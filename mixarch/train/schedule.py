"""The learning-rate multiplier: linear warmup, then cosine decay (or constant)."""

from __future__ import annotations

import math
from collections.abc import Callable

from mixarch.train.schema import ScheduleConfig


def warmup_cosine(config: ScheduleConfig, total_steps: int | Callable[[], int]) -> Callable[[int], float]:
    """``step -> lr multiplier``: ``(step + 1) / warmup_steps`` during warmup, then cosine from 1 to
    ``min_lr_ratio`` at ``total_steps`` (held after), or 1 for ``constant``. A callable ``total_steps`` is
    evaluated only when first needed. A plain function, so LambdaLR keeps it out of checkpoints."""
    warmup, kind, floor = config.warmup_steps, config.kind, config.min_lr_ratio
    total: list[int | Callable[[], int]] = [total_steps]

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        if callable(total[0]):
            total[0] = int(total[0]())
        progress = min(1.0, (step - warmup) / max(1, total[0] - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier
