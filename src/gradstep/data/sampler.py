"""Which samples each epoch visits, in which order, on which rank.

The order of epoch ``e`` is a pure function of ``(seed, e)``: a permutation drawn from a generator
seeded with both, so any epoch can be re-created without replaying the ones before it (what an
exact resume needs), and every rank draws the same permutation.

Under ``world_size`` processes (:func:`shard`), global micro-batch ``k`` is the contiguous block
of ``batch_size × world_size`` samples ``k·B·W …`` of that one order, and rank ``r`` takes the
``r``-th ``batch_size`` of it. The epoch's trailing partial block is split as evenly as possible
(``tensor_split``: the first ranks get one more) — no sample repeated to pad it, none dropped
unless ``drop_last`` (which drops the partial block). So the samples a step sees, and with the
loss weights of :func:`gradstep.loop.forward_backward` its gradient, are those of one process
with a micro-batch of ``B·W``, whatever ``W`` is. ``DistributedSampler`` instead deals samples
out round-robin and pads with repeats, so its steps see other samples, some twice. A rank whose
share of the last block is empty still takes part in the step (an empty micro-batch).
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


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool = True) -> torch.Tensor:
    """Epoch ``epoch``'s order of the ``n`` samples, as one process visits them (int64, CPU)."""
    if shuffle:
        return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    return torch.arange(n)


def global_blocks(n: int, block: int | None, drop_last: bool = False) -> list[int]:
    """The sizes of an epoch's global micro-batches: blocks of ``block`` samples (``None``: the
    whole set, batch GD), the last one partial unless ``drop_last`` drops it."""
    if block is None:
        return [n]
    full, rest = divmod(n, block)
    return [block] * full + ([rest] if rest and not drop_last else [])


def share(m: int, world_size: int, rank: int) -> int:
    """Rank ``rank``'s part of a global block of ``m`` samples (``tensor_split``'s sizes: the
    first ``m % world_size`` ranks take one more)."""
    return m // world_size + (1 if rank < m % world_size else 0)


def shard(
    order: torch.Tensor,
    batch_size: int | None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> torch.Tensor:
    """Rank ``rank``'s samples of the epoch ``order``, in order: its part of each global block
    (see the module docstring). ``batch_size`` is per rank (``None``: batch GD, the whole set as
    one block split across the ranks)."""
    if world_size == 1:
        return order
    n = len(order)
    if batch_size is None:
        return order.tensor_split(world_size)[rank]
    block = batch_size * world_size
    full = n // block
    body = order[: full * block].view(full, world_size, batch_size)[:, rank].reshape(-1)
    tail = order[full * block :]
    if drop_last or len(tail) == 0:
        return body
    return torch.cat([body, tail.tensor_split(world_size)[rank]])


def epoch_indices(
    n: int,
    epoch: int,
    seed: int,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int | None = None,
    drop_last: bool = False,
) -> torch.Tensor:
    """The sample indices rank ``rank`` visits in epoch ``epoch``, in order (int64, on the CPU)."""
    return shard(epoch_order(n, epoch, seed, shuffle), batch_size, rank, world_size, drop_last)


class EpochSampler(Sampler[int]):
    """A ``DataLoader`` sampler with the same order as :func:`epoch_indices`; call ``set_epoch``.

    ``start`` skips the epoch's first samples of this rank (a resume mid-epoch); ``set_epoch``
    resets it.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
        drop_last: bool = False,
    ):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.drop_last = batch_size, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.n, self.epoch, self.seed, self.shuffle)
        idx = shard(order, self.batch_size, self.rank, self.world_size, self.drop_last)
        return iter(idx[self.start :].tolist())

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        block = None if self.batch_size is None else self.batch_size * self.world_size
        blocks = global_blocks(self.n, block, self.drop_last)
        return sum(share(m, self.world_size, self.rank) for m in blocks)
