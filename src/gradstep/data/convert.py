"""Turn what users hand us — tensors, numpy arrays, lists, Datasets, DataLoaders — into one form.

In-memory data becomes a ``(X, y)`` pair of tensors (float64 features become float32, the dtype
of PyTorch's parameters; uint8 features are 8-bit pixels and become float32 in [0, 1], divided by
255 as torchvision's ``ToTensor`` and the MNIST source divide them; integer labels become int64)
so it can be batched by slicing whole tensors. A ``TensorDataset`` of two tensors counts as
in-memory too. Any other ``Dataset`` or a ``DataLoader`` is kept as it is and goes through
``DataLoader``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from gradstep.errors import UserError

TensorPair = tuple[torch.Tensor, torch.Tensor]
DataLike = TensorPair | Dataset | DataLoader


def is_pixels(a: Any) -> bool:
    """Whether features ``a`` are 8-bit pixels (uint8), which :func:`to_data` scales to [0, 1]."""
    dtype = getattr(a, "dtype", None)
    return dtype == torch.uint8 or dtype == np.uint8


def _tensor(a: Any, what: str, pixels: bool = False) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a
    else:
        try:
            t = torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError, RuntimeError) as err:
            raise UserError(f"{what}: cannot be made a tensor: {err}") from None
    if pixels and t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.float64:
        t = t.float()
    elif t.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        t = t.long()
    return t


def to_data(obj: Any, what: str) -> DataLike:
    """Normalise ``obj`` (``(X, y)``, a Dataset or a DataLoader); ``what`` names it in errors."""
    if isinstance(obj, DataLoader):
        return obj
    if isinstance(obj, TensorDataset) and len(obj.tensors) == 2:
        obj = obj.tensors
    if isinstance(obj, Dataset):
        try:
            n = len(obj)  # type: ignore[arg-type]
        except TypeError:
            raise UserError(f"{what}: a Dataset without __len__; wrap it in a DataLoader") from None
        if n == 0:
            raise UserError(f"{what}: the dataset is empty")
        return obj
    if isinstance(obj, tuple | list) and len(obj) == 2:
        x, y = _tensor(obj[0], f"{what} X", pixels=True), _tensor(obj[1], f"{what} y")
        if x.ndim == 0 or y.ndim == 0:
            raise UserError(
                f"{what}: X and y need a sample dimension, got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if len(x) != len(y):
            raise UserError(f"{what}: X has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise UserError(f"{what}: the dataset is empty (0 samples)")
        return x, y
    raise UserError(
        f"{what}: expected (X, y) tensors or arrays, a Dataset or a DataLoader, "
        f"got {type(obj).__name__}"
    )


MAX_CLASSES = 10_000_000
"""The most classes labels may imply: an output layer of 10⁷ classes is already 2.5 GB of
float32 at a width of 64; a label beyond is an id that is not a class index."""
SPARSE_CLASSES = 100_000
"""Above this many classes, labels must not imply more classes than there are samples."""


def class_count_problem(highest: int, samples: int) -> str | None:
    """Why a largest label of ``highest`` cannot be a class id in data of ``samples`` samples,
    or None. Cross-entropy takes ids ``0..C-1``, so a label of 2,000,000,000 makes two billion
    classes, and an output layer nothing can allocate. Refused: more than :data:`MAX_CLASSES`,
    or more than :data:`SPARSE_CLASSES` and more classes than samples (most classes could have
    no sample: the labels are ids of something else). Cheap: one ``max`` the caller has."""
    classes = highest + 1
    if classes > MAX_CLASSES:
        limit = f"more than the {MAX_CLASSES:,} an output layer may have"
    elif classes > SPARSE_CLASSES and classes > samples:
        limit = f"more than the {samples:,} samples"
    else:
        return None
    return (
        f"the largest label is {highest}, which makes {classes:,} classes for cross_entropy "
        f"(class ids are 0..C-1), {limit}; number the classes from 0, or use [train] loss = 'mse'"
    )


def is_pair(data: DataLike | None) -> bool:
    return isinstance(data, tuple)


def num_samples(data: DataLike) -> int:
    if isinstance(data, tuple):
        return len(data[0])
    if isinstance(data, DataLoader):
        return len(data.dataset)  # type: ignore[arg-type]
    return len(data)  # type: ignore[arg-type]
