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

from gradstep.data.sampler import EpochSampler, epoch_indices, epoch_seed
from gradstep.errors import UserError

Batch = tuple[Any, torch.Tensor]


class TensorBatches:
    """Batches of an in-memory ``(X, y)`` pair; ``batch_size=None`` means the full set (BGD)."""

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
        self.n = len(epoch_indices(len(x), 0, seed, False, rank, world_size))
        self.batch_size = self.n if batch_size is None else batch_size
        self.drop_last = drop_last

    @property
    def num_samples(self) -> int:
        return self.n

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        if self.shuffle or self.world_size > 1:
            idx = epoch_indices(
                len(self.x), epoch, self.seed, self.shuffle, self.rank, self.world_size
            )
            idx = idx.to(self.device)
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
            sampler = self.sampler = EpochSampler(n, seed, shuffle, rank, world_size)
            self.generator = torch.Generator()
            self.loader = DataLoader(
                data,
                batch_size=len(sampler) if batch_size is None else batch_size,
                sampler=sampler,
                drop_last=drop_last,
                num_workers=num_workers,
                generator=self.generator,
                pin_memory=self.device.type == "cuda",
                persistent_workers=num_workers > 0,
            )
        self.batch_size = self.loader.batch_size

    @property
    def num_samples(self) -> int:
        sampler = getattr(self.loader, "sampler", None)
        try:
            return len(sampler) if sampler is not None else len(self.loader.dataset)  # type: ignore[arg-type]
        except TypeError:
            return 0

    def __len__(self) -> int:
        return len(self.loader)

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
        for i, batch in enumerate(self.loader):
            if i < skip:
                continue
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise UserError(
                    "each batch must be an (inputs, targets) pair; the data gave "
                    f"{type(batch).__name__}"
                    + (f" of {len(batch)}" if isinstance(batch, tuple | list) else "")
                )
            yield _to(batch[0], self.device), _to(batch[1], self.device)


def make_batches(
    data: Any, batch_size: int | None, *, device: torch.device, **kw: Any
) -> TensorBatches | LoaderBatches:
    """:class:`TensorBatches` for an ``(X, y)`` pair, :class:`LoaderBatches` otherwise."""
    if isinstance(data, tuple):
        kw.pop("num_workers", None)
        return TensorBatches(data[0], data[1], batch_size, device=device, **kw)
    return LoaderBatches(data, batch_size, device=device, **kw)
