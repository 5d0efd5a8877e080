"""Micro-batches for the loop: fast slicing of in-memory tensors, or a DataLoader for the rest.

Both kinds have ``len()`` (batches per epoch) and ``epoch(e, start=0)``, which yields the
epoch's ``(x, y)`` pairs from micro-batch ``start`` on (an exact resume mid-epoch), already on the
training device.

* :class:`TensorBatches` keeps the whole dataset on the device, gathers it once per epoch in the
  epoch's order (one ``index_select``), and yields views made by one ``split`` call — no per-sample
  ``__getitem__``, no collate, no host-device copy per step. This is the hand-written
  "slice pre-shuffled tensors" loop, which is the fastest plain-PyTorch loop.
* :class:`LoaderBatches` wraps a generic ``Dataset`` in a ``DataLoader`` whose sampler is
  :class:`~gradstep.data.sampler.EpochSampler` (same order, rank-aware), or uses the user's own
  ``DataLoader`` as given.

Batches per epoch are ``ceil(N / B)``, or ``floor(N / B)`` with ``drop_last``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from gradstep.data.sampler import (
    EpochSampler,
    epoch_order,
    epoch_seed,
    global_blocks,
    shard,
    share,
)
from gradstep.errors import UserError

Batch = tuple[Any, torch.Tensor]


class TensorBatches:
    """Batches of an in-memory ``(X, y)`` pair; ``batch_size=None`` means the full set (BGD).

    ``batch_size`` is per rank; under ``world_size`` ranks, this rank's micro-batch ``k`` is its
    part of global micro-batch ``k`` (:func:`~gradstep.data.sampler.shard`), whose size
    :meth:`global_size` gives — what the loss weights of a step divide by. Every rank yields
    ``len(self)`` micro-batches, an empty one where its share of the last block is empty.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None,
        *,
        drop_last: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.x, self.y = x.to(device), y.to(device)
        self.device = torch.device(device)
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.n = len(x)
        self.per_rank = batch_size  # None: batch GD
        if batch_size is None:
            self.batch_size = -(-self.n // world_size)  # this rank's share of the one batch
        else:
            self.batch_size = batch_size
        self.drop_last = drop_last
        block = None if batch_size is None else batch_size * world_size
        self.blocks = global_blocks(self.n, block, drop_last)
        # this rank's part of each global block (a partial block: tensor_split's sizes)
        self.sizes = [share(m, world_size, rank) for m in self.blocks]

    @property
    def num_samples(self) -> int:
        """The training set's samples (all ranks together)."""
        return self.n

    def __len__(self) -> int:
        return len(self.blocks)

    def global_size(self, k: int) -> int:
        """Samples of global micro-batch ``k`` of an epoch (all ranks together)."""
        return self.blocks[k]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        if self.world_size > 1:
            order = epoch_order(self.n, epoch, self.seed, self.shuffle)
            idx = shard(order, self.per_rank, self.rank, self.world_size, self.drop_last)
            idx = idx.to(self.device)
            x, y = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if start >= len(self.sizes):
                return iter(())
            first = sum(self.sizes[:start])
            sizes = self.sizes[start:]
            return zip(x[first:].split(sizes), y[first:].split(sizes), strict=True)
        if self.shuffle:
            idx = epoch_order(self.n, epoch, self.seed, self.shuffle).to(self.device)
            x, y = self.x.index_select(0, idx), self.y.index_select(0, idx)
        else:
            x, y = self.x, self.y
        used = len(self) * self.batch_size if self.drop_last else len(x)
        first = start * self.batch_size
        if first >= used:  # resumed after the epoch's last batch (split would yield one empty)
            return iter(())
        x, y = x[first:used], y[first:used]
        return zip(x.split(self.batch_size), y.split(self.batch_size), strict=True)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple | list):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


class LoaderBatches:
    """Batches from a ``Dataset`` (through our ``DataLoader``) or the user's ``DataLoader``."""

    def __init__(
        self,
        data: Dataset | DataLoader,
        batch_size: int | None,
        *,
        drop_last: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.seed = seed
        # The loader's own generator, reseeded each epoch: creating an iterator draws its base
        # seed from it, not from the global generator that dropout uses, so loading never shifts
        # the training RNG. Exactness limit: with num_workers > 0 (persistent workers), random
        # transforms inside a Dataset draw from worker streams that a resumed run does not
        # reproduce; the sample order, and everything with num_workers = 0, is exact.
        self.generator: torch.Generator | None = None
        self.sampler: EpochSampler | None = None
        if isinstance(data, DataLoader):
            self.loader = data
        else:
            n = len(data)  # type: ignore[arg-type]
            sampler = self.sampler = EpochSampler(
                n, seed, shuffle, rank, world_size, batch_size, drop_last
            )
            self.generator = torch.Generator()
            self.loader = DataLoader(
                data,
                batch_size=max(len(sampler), 1) if batch_size is None else batch_size,
                sampler=sampler,
                drop_last=drop_last and world_size == 1,  # sharded: the sampler dropped it
                num_workers=num_workers,
                generator=self.generator,
                pin_memory=self.device.type == "cuda",
                persistent_workers=num_workers > 0,
            )
        self.batch_size = self.loader.batch_size
        self.world_size = world_size
        self.blocks: list[int] | None = None  # global micro-batch sizes (gradstep's sampler)
        if self.sampler is not None and world_size > 1:
            block = None if batch_size is None else batch_size * world_size
            self.blocks = global_blocks(self.sampler.n, block, drop_last)

    @property
    def num_samples(self) -> int:
        """The training set's samples (all ranks together)."""
        if self.sampler is not None:
            return self.sampler.n
        sampler = getattr(self.loader, "sampler", None)
        try:
            return len(sampler) if sampler is not None else len(self.loader.dataset)  # type: ignore[arg-type]
        except TypeError:
            return 0

    def __len__(self) -> int:
        return len(self.blocks) if self.blocks is not None else len(self.loader)

    def global_size(self, k: int) -> int | None:
        """Samples of global micro-batch ``k`` (all ranks), or None where unknown (a user's
        ``DataLoader``: each rank's batch then counts for itself)."""
        return self.blocks[k] if self.blocks is not None else None

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from micro-batch ``start`` on. With gradstep's own sampler the
        skipped samples are never loaded; a user's ``DataLoader`` is read from the epoch's start
        and the first ``start`` batches are dropped (exact only if its order is reproducible)."""
        for obj in (self.loader.sampler, getattr(self.loader, "batch_sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)  # type: ignore[union-attr]
        if self.generator is not None:
            self.generator.manual_seed(epoch_seed(self.seed, epoch) ^ 0x5EED)
        skip = start
        if self.sampler is not None:
            self.sampler.start = start * (self.batch_size or 0)
            skip = 0
        given = 0
        last: Batch | None = None
        for i, batch in enumerate(self.loader):
            if i < skip:
                continue
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise UserError(
                    "each batch must be an (inputs, targets) pair; the data gave "
                    f"{type(batch).__name__}"
                    + (f" of {len(batch)}" if isinstance(batch, tuple | list) else "")
                )
            last = _to(batch[0], self.device), _to(batch[1], self.device)
            given += 1
            yield last
        if self.blocks is not None and start + given < len(self.blocks):
            # sharded: this rank's share of the last block is empty; it still takes the step
            # (also when a resume starts there: then a sample of the data is the template)
            if last is None:
                one = self.loader.collate_fn([self.loader.dataset[0]])
                last = _to(one[0], self.device), _to(one[1], self.device)
            yield _empty(last[0]), last[1][:0]


def _empty(x: Any) -> Any:
    """A batch like ``x`` with no sample."""
    if isinstance(x, torch.Tensor):
        return x[:0]
    if isinstance(x, tuple | list):
        return type(x)(_empty(v) for v in x)
    if isinstance(x, dict):
        return {k: _empty(v) for k, v in x.items()}
    return x


def make_batches(
    data: Any, batch_size: int | None, *, device: torch.device, **kw: Any
) -> TensorBatches | LoaderBatches:
    """:class:`TensorBatches` for an ``(X, y)`` pair, :class:`LoaderBatches` otherwise."""
    if isinstance(data, tuple):
        kw.pop("num_workers", None)
        return TensorBatches(data[0], data[1], batch_size, device=device, **kw)
    return LoaderBatches(data, batch_size, device=device, **kw)
