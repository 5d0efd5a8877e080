"""Which samples each epoch visits, in which order, on which rank.

The order of epoch ``e`` is a pure function of ``(seed, e)``: a permutation drawn from a generator
seeded with both, so any epoch can be re-created without replaying the ones before it (what an
exact resume needs), and every rank draws the same permutation. Under ``world_size`` processes the
permutation is padded by wrapping around to a multiple of ``world_size`` and rank ``r`` takes every
``world_size``-th index from ``r`` (as ``DistributedSampler`` does), so shards are disjoint and
equally long.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed`` (mixed, not ``seed + epoch``)."""
    return int(
        np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(2, np.uint64)[0] >> 1
    )


def epoch_indices(
    n: int, epoch: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """The sample indices rank ``rank`` visits in epoch ``epoch``, in order (int64, on the CPU)."""
    if shuffle:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    else:
        idx = torch.arange(n)
    if world_size > 1:
        total = -(-n // world_size) * world_size
        if total > n:
            idx = torch.cat([idx, idx[: total - n]])
        idx = idx[rank::world_size]
    return idx


class EpochSampler(Sampler[int]):
    """A ``DataLoader`` sampler with the same order as :func:`epoch_indices`; call ``set_epoch``.

    ``start`` skips the epoch's first samples (a resume mid-epoch); ``set_epoch`` resets it.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def __iter__(self) -> Iterator[int]:
        idx = epoch_indices(self.n, self.epoch, self.seed, self.shuffle, self.rank, self.world_size)
        return iter(idx[self.start :].tolist())

    def __len__(self) -> int:
        return -(-self.n // self.world_size)
