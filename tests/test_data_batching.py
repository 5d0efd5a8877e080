"""The sampler and the batchers: epoch order, rank sharding, batch counts, DataLoader parity."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from gradstep.data.batcher import LoaderBatches, TensorBatches
from gradstep.data.sampler import EpochSampler, epoch_indices


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_indices(50, epoch=3, seed=1)
    assert torch.equal(a, epoch_indices(50, epoch=3, seed=1))
    assert not torch.equal(a, epoch_indices(50, epoch=4, seed=1))
    assert not torch.equal(a, epoch_indices(50, epoch=3, seed=2))
    assert sorted(a.tolist()) == list(range(50))
    assert epoch_indices(5, 1, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_ranks_take_contiguous_parts_of_each_global_block_without_padding():
    """Global micro-batch k is samples k·B·W … of the one order; rank r its r-th B; the last,
    partial block split as evenly as possible; nothing repeated, nothing dropped."""
    order = epoch_indices(23, 2, 0)
    shards = [epoch_indices(23, 2, 0, rank=r, world_size=3, batch_size=2) for r in range(3)]
    # blocks of 6: [0:6] [6:12] [12:18] and a last block of 5 split 2 / 2 / 1
    expected = [
        [*order[0:2], *order[6:8], *order[12:14], *order[18:20]],
        [*order[2:4], *order[8:10], *order[14:16], *order[20:22]],
        [*order[4:6], *order[10:12], *order[16:18], *order[22:23]],
    ]
    assert [s.tolist() for s in shards] == [[int(i) for i in e] for e in expected]
    seen = torch.cat(shards).tolist()
    assert sorted(seen) == list(range(23))  # each sample exactly once
    dropped = [
        epoch_indices(23, 2, 0, rank=r, world_size=3, batch_size=2, drop_last=True)
        for r in range(3)
    ]
    assert [len(d) for d in dropped] == [6, 6, 6]  # the partial block dropped on every rank


def test_every_rank_yields_every_micro_batch_an_empty_one_where_its_share_is_empty():
    x, y = torch.arange(13).float().unsqueeze(1), torch.arange(13)
    ranks = [TensorBatches(x, y, 2, seed=1, rank=r, world_size=3) for r in range(3)]
    assert [len(b) for b in ranks] == [3, 3, 3]  # blocks of 6, 6 and 1
    assert [ranks[0].global_size(k) for k in range(3)] == [6, 6, 1]
    sizes = [[len(yb) for _, yb in b.epoch(1)] for b in ranks]
    assert sizes == [[2, 2, 1], [2, 2, 0], [2, 2, 0]]
    # resumed after micro-batch 1: the rest of the same epoch
    assert [len(yb) for _, yb in ranks[0].epoch(1, start=1)] == [2, 1]
    together = [torch.cat([list(b.epoch(1))[k][1] for b in ranks]) for k in range(3)]
    one = [yb for _, yb in TensorBatches(x, y, 6, seed=1).epoch(1)]
    assert all(torch.equal(a, b) for a, b in zip(together, one, strict=True))
    # the DataLoader path shards the same way and pads nothing either
    loaders = [
        LoaderBatches(TensorDataset(x, y), 2, seed=1, rank=r, world_size=3) for r in range(3)
    ]
    assert [len(b) for b in loaders] == [3, 3, 3]
    got = [[yb.tolist() for _, yb in b.epoch(1)] for b in loaders]
    assert got == [[yb.tolist() for _, yb in b.epoch(1)] for b in ranks]
    # batch GD: the whole set is one block, split across the ranks
    full = [TensorBatches(x, y, None, rank=r, world_size=3) for r in range(3)]
    assert [[len(yb) for _, yb in b.epoch(1)] for b in full] == [[5], [4], [4]]
    assert full[0].global_size(0) == 13


def test_tensor_batches_slice_the_epochs_permutation():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    b = TensorBatches(x, y, 4, seed=0)
    batches = list(b.epoch(1))
    assert len(b) == 3 and [len(yb) for _, yb in batches] == [4, 4, 2]
    assert torch.cat([yb for _, yb in batches]).tolist() == epoch_indices(10, 1, 0).tolist()
    assert all(torch.equal(xb.squeeze(1).long(), yb) for xb, yb in batches)
    dropped = TensorBatches(x, y, 4, drop_last=True, seed=0)
    assert len(dropped) == 2 and [len(yb) for _, yb in dropped.epoch(1)] == [4, 4]
    full = TensorBatches(x, y, None)
    assert len(full) == 1 and full.batch_size == 10


def test_dataset_batches_follow_the_same_order_as_tensor_batches():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    fast = TensorBatches(x, y, 3, seed=7)
    slow = LoaderBatches(TensorDataset(x, y), 3, seed=7)
    for epoch in (1, 2):
        a = [yb.tolist() for _, yb in fast.epoch(epoch)]
        b = [yb.tolist() for _, yb in slow.epoch(epoch)]
        assert a == b
    assert len(slow) == len(fast) == 4


def test_epoch_sampler_sets_its_epoch():
    s = EpochSampler(6, seed=0)
    s.set_epoch(2)
    assert list(s) == epoch_indices(6, 2, 0).tolist() and len(s) == 6
