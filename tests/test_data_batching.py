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


def test_ranks_get_disjoint_equal_shards_that_cover_the_data():
    shards = [epoch_indices(10, 2, 0, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to 12 by wrapping around
    seen = torch.cat(shards).tolist()
    assert set(seen) == set(range(10)) and len(seen) == 12


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
