"""``SyntheticDataModule``: seeded train/val/test splits of a generated token-level task, batched as
``{"input_ids": [B, T], "labels": [B, T], "slices": [B, K]}`` with ``slice_keys`` naming the K columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
from pydantic import BaseModel
from torch.utils.data import DataLoader

from mixarch.data.loader import SegmentDataset, SplitLoaders, make_loader
from mixarch.data.segment import Segment, concat
from mixarch.errors import MixarchError

STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def split_seed(seed: int, split: str, index: int) -> int:
    """A seed for group ``index`` of ``split``, independent across splits and groups."""
    return int(np.random.SeedSequence([seed, SPLIT_IDS[split], index]).generate_state(1)[0])


def model_vocab_size(trainer) -> int | None:
    """The vocabulary size of the model the Trainer is fitting (None without one)."""
    model = getattr(getattr(trainer, "lightning_module", None), "model", None)
    resolved = getattr(model, "resolved", None)
    return resolved.model.vocab_size if resolved is not None else None


def splits(cls: type[BaseModel], train, val, test) -> dict[str, list]:
    """The groups of each split as ``cls`` instances (test defaults to val's groups)."""
    return {name: [cls.model_validate(g) for g in groups]
            for name, groups in (("train", train), ("val", val), ("test", test or val))}


class SyntheticDataModule(SplitLoaders, pl.LightningDataModule):
    """Base of generated tasks: subclasses set ``splits`` (split -> groups) and implement :meth:`make`.

    ``vocab_size`` defaults to the model's; ``seed`` fixes every split (test differs from val).
    """

    def __init__(self, *, vocab_size: int | None = None, batch_size: int = 64, val_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.vocab_size, self.batch_size, self.num_workers, self.seed = vocab_size, batch_size, num_workers, seed
        self.val_batch_size = val_batch_size or batch_size
        self.splits: dict[str, Sequence[Any]] = {}
        self.datasets: dict[str, SegmentDataset] = {}

    def make(self, group: Any, vocab_size: int, seed: int) -> Segment:
        """The examples of one group of a split."""
        raise NotImplementedError

    @property
    def slice_keys(self) -> tuple[str, ...]:
        """Names of the columns of ``batch["slices"]``."""
        ds = self.datasets.get("val") or self.datasets.get("test") or self.datasets.get("train")
        return ds.slice_keys if ds is not None else ()

    def setup(self, stage: str | None = None) -> None:
        vocab = self.vocab_size or model_vocab_size(self.trainer)
        if vocab is None:
            raise MixarchError("vocab_size is required when no model is attached", key="data.vocab_size")
        for split in STAGE_SPLITS.get(stage or "fit", ("train", "val", "test")):
            if split in self.datasets:
                continue
            segments = []
            for i, group in enumerate(self.splits[split]):
                try:
                    segments.append(self.make(group, vocab, split_seed(self.seed, split, i)))
                except ValueError as err:
                    raise MixarchError(str(err), key=f"data.{split}_splits[{i}]") from None
            self.datasets[split] = SegmentDataset(concat(segments))

    def _loader(self, split: str, train: bool) -> DataLoader:
        return make_loader(self.datasets[split], self.trainer, self.batch_size if train else self.val_batch_size, train=train, seed=self.seed,
                           num_workers=self.num_workers)
