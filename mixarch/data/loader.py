"""Data loading that Lightning can checkpoint mid-epoch, and that shards itself across ranks.

:class:`ResumableLoader` is sized, so Lightning does not prefetch from it, and implements ``state_dict`` /
``load_state_dict``: a checkpoint records the epoch and the batches yielded so far, and the resumed
iterator skips exactly those (without loading them). :class:`EpochSampler` is a ``DistributedSampler``
(so Lightning leaves it in place under DDP/FSDP) whose order depends only on the seed and the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mixarch.data.segment import Segment


class SegmentDataset(Dataset):
    """Item ``i`` of a :class:`Segment`: ``{"input_ids": [T], "labels": [T], "slices": [K]}`` (K slice keys
    in ``slice_keys`` order)."""

    def __init__(self, segment: Segment):
        self.segment = segment
        self.slice_keys = tuple(segment.slices)
        self.slices = (torch.stack([segment.slices[k] for k in self.slice_keys], dim=1) if self.slice_keys
                       else torch.zeros(len(segment), 0, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.segment)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.segment.inputs[i], "labels": self.segment.labels[i], "slices": self.slices[i]}


class EpochSampler(DistributedSampler):
    """This rank's share of a permutation seeded by ``seed + epoch`` (or of ``range(n)`` without shuffle);
    ``skip`` samples of the next iteration are dropped once (set when resuming mid-epoch)."""

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip:]
        self.skip = 0
        return iter(indices)


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose position within the epoch is checkpointed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._resume: dict[str, int] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)

    def __iter__(self):
        return self._iterate()

    def _iterate(self):
        # runs at the first ``next``, after Lightning has called ``sampler.set_epoch`` for this epoch
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume and resume["epoch"] == self.sampler.epoch else 0
        self.sampler.skip = skip * self.batch_size
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch


def make_loader(ds: SegmentDataset, trainer, batch_size: int, *, train: bool, seed: int,
                num_workers: int = 0) -> DataLoader:
    """A training :class:`ResumableLoader` (shuffled, full batches) or an evaluation DataLoader (in order),
    over this rank's share of ``ds``."""
    sampler = EpochSampler(ds, num_replicas=trainer.world_size if trainer else 1,
                           rank=trainer.global_rank if trainer else 0, shuffle=train, seed=seed, drop_last=train)
    cls = ResumableLoader if train else DataLoader
    return cls(ds, batch_size=batch_size, sampler=sampler, drop_last=train, num_workers=num_workers,
               persistent_workers=num_workers > 0)


class SplitLoaders:
    """The four ``*_dataloader`` hooks of a LightningDataModule, over ``self.datasets[split]`` via
    ``self._loader(split, train)`` (predict uses the test split)."""

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
