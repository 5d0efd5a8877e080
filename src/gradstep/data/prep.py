"""Preprocessing that belongs to a run: the validation split and feature normalisation.

Both are computed from the training data only and are part of the run's state: the split is a
seeded permutation (the same seed gives the same split), and the normaliser's mean and std are
kept so that validation and, later, prediction apply exactly what training applied.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from gradstep.data.convert import DataLike
from gradstep.errors import UserError


def split(data: DataLike, fraction: float, seed: int) -> tuple[DataLike, DataLike | None]:
    """Hold out ``fraction`` of ``data`` for validation: a seeded, deterministic random split."""
    if fraction <= 0:
        return data, None
    n = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise UserError(
            f"[data] val_split = {fraction} leaves no training samples out of {n}; lower it"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    if isinstance(data, tuple):
        x, y = data
        return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
    assert isinstance(data, Dataset)
    return Subset(data, train_idx.tolist()), Subset(data, val_idx.tolist())


class Normalizer:
    """Standardise features with the training set's mean and std: ``(x - mean) / std``.

    Tabular input ``(N, F)`` is standardised per feature; image-like input ``(N, C, ...)`` per
    channel (one mean/std for a grey-scale image, as the MNIST recipe's 0.1307 / 0.3081).
    A constant feature (std 0) is only centred.

    Example::

        norm = Normalizer.fit(x_train)
        x_val = norm(x_val)
        Normalizer.from_state_dict(norm.state_dict())(x_new)
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, *, given: bool = False) -> None:
        self.mean, self.std = mean, std
        self.given = given  # the constants came from [data] normalize = [mean, std], not a fit

    @classmethod
    def given_constants(
        cls,
        mean: list[float],
        std: list[float],
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
    ) -> Normalizer:
        """Constants the user chose (``Normalize((0.1307,), (0.3081,))``), shaped to broadcast
        over a batch: ``(1, C, 1, 1)`` per channel, ``(1, F)`` per feature, all ones for one
        number."""
        m = torch.tensor(mean, dtype=torch.float64).reshape(shape).to(dtype)
        s = torch.tensor(std, dtype=torch.float64).reshape(shape).to(dtype)
        return cls(m, s, given=True)

    @classmethod
    def fit(cls, x: torch.Tensor, *, grey: bool = False) -> Normalizer:
        """Fit on ``x``; ``grey``: ``x`` is ``(N, H, W)`` single-channel images (8-bit pixels
        without a channel dimension), one mean/std for all pixels — not one per image row, as
        reading dimension 1 as channels would."""
        if grey:
            dims = list(range(x.ndim))
        else:
            dims = [0] if x.ndim <= 2 else [0, *range(2, x.ndim)]
        xd = x.double()
        mean = xd.mean(dim=dims, keepdim=True)[:1]
        std = xd.std(dim=dims, keepdim=True, unbiased=False)[:1] if len(x) > 1 else None
        if std is None:
            std = torch.ones_like(mean)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(mean.to(x.dtype), std.to(x.dtype))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Normalizer:
        return cls(state["mean"], state["std"])

    def describe(self) -> str:
        if self.mean.numel() == 1:
            return f"mean {self.mean.item():.4f}, std {self.std.item():.4f}"
        return f"per-feature mean/std over {self.mean.numel()} features"
