"""A generic ``Dataset`` at start-up: what its samples are, and how many classes it has.

**Samples.** The loop takes ``(input, target)`` pairs. A Dataset whose samples are dicts
(``{"image": ..., "label": ...}``, as Hugging Face datasets give them) or tuples of more than two
items (``(image, mask, label)``) is read through :class:`KeyedSamples`, which picks
``[data] input_key`` and ``target_key`` (keys, or positions in a tuple). Without them such
samples are an error that names what the samples hold. A ``DataLoader`` is used as given: its
batches must already be pairs.

**Classes.** A model built by name needs the class count for its output layer. For a Dataset
it comes, without reading any sample, from ``[model.args] num_classes`` (or ``out_features``),
else the Dataset's ``classes`` attribute (its length, as torchvision datasets have it), else
its ``targets`` attribute (the largest label + 1). Only when none is there are the samples
read, once, in a ``DataLoader`` with ``[data] num_workers`` workers, with one line saying why
and a progress bar on a terminal. :func:`prepare_data` registers how a Dataset it returns may be
counted (:func:`remember`); :func:`~gradstep.preflight.num_outputs` counts when a model needs it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from gradstep.errors import UserError, did_you_mean

Key = str | int


class KeyedSamples(Dataset):
    """``dataset``'s samples as ``(sample[input_key], sample[target_key])`` pairs.

    Example::

        KeyedSamples(hf_dataset, "image", "label")[0]   # (image, label)
    """

    def __init__(self, dataset: Dataset, input_key: Key, target_key: Key) -> None:
        self.dataset, self.input_key, self.target_key = dataset, input_key, target_key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        sample = self.dataset[i]
        return sample[self.input_key], sample[self.target_key]


def _describe(sample: Any) -> str:
    if isinstance(sample, Mapping):
        keys = ", ".join(repr(k) for k in list(sample)[:8])
        return f"dicts (keys {keys})"
    return f"tuples of {len(sample)} items"


def keyed(data: Any, input_key: Key | None, target_key: Key | None, what: str) -> Any:
    """``data`` with its samples made ``(input, target)`` pairs (see the module docstring).
    In-memory pairs and DataLoaders are returned as they are; keys given for them are an error
    (they would be ignored)."""
    if input_key is not None and not isinstance(data, Dataset):
        kind = "a DataLoader, whose batches" if isinstance(data, DataLoader) else "in-memory data"
        raise UserError(
            f"{what}: [data] input_key / target_key pick the parts of a Dataset's samples; the "
            f"data is {kind}"
            + (" must already be (input, target) pairs" if isinstance(data, DataLoader) else "")
        )
    if not isinstance(data, Dataset):
        return data
    first = data[0]
    structured = isinstance(first, Mapping) or (isinstance(first, tuple | list) and len(first) > 2)
    if input_key is None:
        if not structured:
            return data
        if isinstance(first, Mapping):
            keys = [str(k) for k in first]
            example = "input_key = 'image', target_key = 'label'"
            if len(keys) >= 2:
                example = f"input_key = {keys[0]!r}, target_key = {keys[-1]!r}"
        else:
            example = f"input_key = 0, target_key = {len(first) - 1}"
        raise UserError(
            f"{what}: the samples are {_describe(first)}, not (input, target) pairs; set "
            f"[data] input_key and target_key (e.g. {example})"
        )
    assert target_key is not None  # the config requires both
    for name, key in (("input_key", input_key), ("target_key", target_key)):
        try:
            first[key]
        except (KeyError, IndexError, TypeError):
            options = [str(k) for k in first] if isinstance(first, Mapping) else []
            hint = did_you_mean(str(key), options) if isinstance(key, str) else ""
            raise UserError(
                f"{what}: [data] {name} = {key!r} is not in the samples, which are "
                f"{_describe(first) if structured else type(first).__name__}{hint}"
            ) from None
    return KeyedSamples(data, input_key, target_key)


# --- class counts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counting:
    """How :func:`count_highest_label` may find a Dataset's class count: a count the user
    gave (``[model.args] num_classes``), the workers to scan with, where the line goes."""

    given: int | None = None
    num_workers: int = 0
    warn: Callable[[str], None] | None = None


_COUNTING: weakref.WeakKeyDictionary[Any, Counting] = weakref.WeakKeyDictionary()


def remember(data: Any, counting: Counting) -> None:
    """Record how ``data`` (a Dataset or DataLoader ``prepare_data`` returned) may be counted."""
    if data is None or isinstance(data, tuple):
        return
    try:
        _COUNTING[data] = counting
    except TypeError:  # not weak-referenceable or not hashable: counted with the defaults
        pass


def _counting(data: Any) -> Counting:
    try:
        return _COUNTING.get(data) or Counting()
    except TypeError:
        return Counting()


def _base(ds: Any) -> Any:
    """The Dataset that holds the attributes: through gradstep's splits and key pickers."""
    while isinstance(ds, Subset | KeyedSamples):
        ds = ds.dataset
    return ds


def label_attribute(data: Any) -> int | None:
    """The highest label ``data`` tells without reading a sample: ``len(classes) - 1`` or
    ``max(targets)``; None when it has neither."""
    ds = _base(data.dataset if isinstance(data, DataLoader) else data)
    classes = getattr(ds, "classes", None)
    if isinstance(classes, int) and not isinstance(classes, bool) and classes > 0:
        return classes - 1
    if isinstance(classes, list | tuple) and classes:
        return len(classes) - 1
    targets = getattr(ds, "targets", None)
    if targets is not None:
        t = torch.as_tensor(targets)
        if t.numel():
            return int(t.max())  # sync: once, at start-up
    return None


def _targets_only(batch: list[Any]) -> Any:
    """Collate only the targets (inputs of different sizes need not stack)."""
    return default_collate([sample[1] for sample in batch])


def count_highest_label(datasets: list[Any], whats: list[str]) -> int:
    """The highest label over ``datasets`` (Datasets or DataLoaders): given, read from an
    attribute, or scanned (see the module docstring)."""
    highest, scan = -1, []
    for d in datasets:
        counting = _counting(d)
        if counting.given is not None:
            highest = max(highest, counting.given - 1)
            continue
        found = label_attribute(d)
        if found is None:
            scan.append(d)
        else:
            highest = max(highest, found)
    if scan:
        highest = max(highest, _scan(scan, whats))
    return highest


def _scan(datasets: list[Any], whats: list[str]) -> int:
    counting = _counting(datasets[0])
    sizes = []
    for d in datasets:
        try:
            sizes.append(len(d.dataset if isinstance(d, DataLoader) else d))
        except TypeError:
            sizes.append(0)
    n = sum(sizes)
    line = (
        f"counting the classes: reading the targets of all {n:,} samples "
        f"({' and '.join(dict.fromkeys(whats))}); set [model.args] num_classes, or give the "
        "Dataset a `targets` or `classes` attribute, to skip this"
    )
    if counting.warn is not None:
        counting.warn(line)
    else:
        import warnings

        warnings.warn(line, UserWarning, stacklevel=4)
    from gradstep import dist

    console = Console(stderr=True, quiet=not dist.is_main_process())
    columns = (TextColumn("counting classes"), BarColumn(), MofNCompleteColumn())
    highest = -1
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("scan", total=n or None)
        for d in datasets:
            if isinstance(d, DataLoader):  # the user's loader: its batches are pairs
                for batch in d:
                    highest = max(highest, int(torch.as_tensor(batch[1]).max()))
                    bar.advance(task, len(batch[1]))
                continue
            loader = DataLoader(
                d,
                batch_size=256,
                num_workers=counting.num_workers,
                collate_fn=_targets_only,
            )
            for y in loader:
                y = torch.as_tensor(y)
                if y.numel():
                    highest = max(highest, int(y.max()))  # sync: a scan at start-up
                bar.advance(task, len(y))
    return highest
