"""ResumableLoader / EpochSampler: seeded order per epoch, rank shards, mid-epoch state that skips exactly."""

from __future__ import annotations

import torch

from mixarch.data.loader import EpochSampler, SegmentDataset, make_loader
from mixarch.data.segment import Segment


def dataset(n: int = 20) -> SegmentDataset:
    ids = torch.arange(n)[:, None].repeat(1, 4)
    return SegmentDataset(Segment(ids, ids, {"k": torch.arange(n)}))


def firsts(batches) -> list[list[int]]:
    return [b["input_ids"][:, 0].tolist() for b in batches]


def test_order_depends_on_seed_and_epoch_only():
    a, b = make_loader(dataset(), None, 4, train=True, seed=1), make_loader(dataset(), None, 4, train=True, seed=1)
    assert firsts(a) == firsts(b)
    a.sampler.set_epoch(1)
    assert firsts(a) != firsts(b) and sorted(sum(firsts(a), [])) == list(range(20))


def test_resume_skips_exactly_the_batches_seen():
    loader = make_loader(dataset(), None, 4, train=True, seed=0)
    loader.sampler.set_epoch(2)
    full = firsts(loader)
    it = iter(loader)
    seen = [next(it) for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2} and firsts(seen) == full[:2]

    resumed = make_loader(dataset(), None, 4, train=True, seed=0)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    assert firsts(resumed) == full[2:] and resumed.state_dict()["batches"] == 5
    assert firsts(resumed) == full  # the skip applies once
    other = make_loader(dataset(), None, 4, train=True, seed=0)
    other.load_state_dict(state)
    other.sampler.set_epoch(3)  # saved at another epoch (e.g. its end): nothing to skip
    assert len(firsts(other)) == 5


def test_ranks_get_disjoint_shards_and_eval_keeps_order():
    shards = [list(EpochSampler(dataset(), num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 10
    evaluation = make_loader(dataset(10), None, 4, train=False, seed=0)
    assert sum(firsts(evaluation), []) == list(range(10)) and evaluation.batch_size == 4
