"""Data for a run: load the source, split off validation, fix target dtypes, normalise.

:func:`prepare_data` is the one entry point; see :mod:`gradstep.data.sources` for the sources,
:mod:`gradstep.data.batcher` for how samples become micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from gradstep.config import Config, DataSection
from gradstep.data.batcher import LoaderBatches, TensorBatches, make_batches
from gradstep.data.convert import DataLike, class_count_problem, num_samples, to_data
from gradstep.data.prep import Normalizer, split
from gradstep.data.sources import load_source
from gradstep.errors import UserError

__all__ = [
    "DataLike",
    "LoaderBatches",
    "Normalizer",
    "PreparedData",
    "TensorBatches",
    "check_class_ids",
    "fix_targets",
    "make_batches",
    "num_samples",
    "prepare_data",
]


@dataclass
class PreparedData:
    train: DataLike
    val: DataLike | None
    description: str
    normalizer: Normalizer | None = None
    notes: tuple[str, ...] = ()


def fix_targets(y: torch.Tensor, task: str, what: str) -> torch.Tensor:
    """Class ids as int64 for cross-entropy; float targets for the other losses."""
    if task == "multiclass":
        if y.is_floating_point():
            if not bool(torch.all(y == y.round())):
                bad = y[y != y.round()][0].item()
                raise UserError(
                    f"{what}: [train] loss = 'cross_entropy' needs integer class labels, found "
                    f"{bad!r}; for real-valued targets use loss = 'mse'"
                )
            y = y.long()
        if y.ndim != 1:
            raise UserError(
                f"{what}: [train] loss = 'cross_entropy' needs one class id per sample, "
                f"y has shape {tuple(y.shape)}"
            )
        if y.dtype == torch.bool:
            y = y.long()
        return y
    return y.float() if not y.is_floating_point() else y


def _source_names(cfg: DataSection, has_val: bool) -> tuple[str, str]:
    """How errors name where the training and the validation samples came from."""
    if cfg.source in ("mnist", "csv", "npz"):
        train = f"[data] path = {cfg.path!r}"
        return train, f"[data] val_path = {cfg.val_path!r}" if has_val else train
    source = f"[data] source = {cfg.source!r}"
    return source, source


def check_class_ids(data: DataLike | None, samples: int, what: str) -> None:
    """Refuse in-memory class labels that cannot be class ids (see
    :func:`~gradstep.data.convert.class_count_problem`), naming ``what`` (the file)."""
    if not isinstance(data, tuple) or data[1].is_floating_point():
        return
    problem = class_count_problem(int(data[1].max()), samples)  # sync: once, before training
    if problem is not None:
        raise UserError(f"{what}: {problem}")


def _is_float_features(data: DataLike) -> bool:
    return isinstance(data, tuple) and data[0].is_floating_point()


def prepare_data(
    cfg: Config,
    task: str,
    train: Any = None,
    val: Any = None,
    base_dir: Path | None = None,
) -> PreparedData:
    """Load (or take) the data, split, fix targets and normalise, per ``cfg.data``."""
    notes: list[str] = []
    if train is None:
        if val is not None:
            raise UserError("validation data given without training data")
        train_d, val_d, desc = load_source(cfg.data, cfg.run.seed, base_dir)
        train_what, val_what = _source_names(cfg.data, val_d is not None)
    else:
        train_d = to_data(train, "training data")
        val_d = to_data(val, "validation data") if val is not None else None
        desc = f"in-memory data: {num_samples(train_d)} samples"
        train_what, val_what = "training data", "validation data"
    samples = sum(len(d[0]) for d in (train_d, val_d) if isinstance(d, tuple))
    if val_d is None and cfg.data.val_split > 0:
        if isinstance(train_d, DataLoader):
            notes.append("no validation: a DataLoader cannot be split (pass val=...)")
        else:
            train_d, val_d = split(train_d, cfg.data.val_split, cfg.run.seed)
            val_what = train_what
    if isinstance(train_d, tuple):
        train_d = (train_d[0], fix_targets(train_d[1], task, "training data"))
    if isinstance(val_d, tuple):
        val_d = (val_d[0], fix_targets(val_d[1], task, "validation data"))
    if task == "multiclass":  # before a model is sized by the labels
        check_class_ids(train_d, samples, train_what)
        check_class_ids(val_d, samples, val_what)
    normalizer = None
    if cfg.data.normalize:
        if _is_float_features(train_d):
            assert isinstance(train_d, tuple)
            normalizer = Normalizer.fit(train_d[0])
            train_d = (normalizer(train_d[0]), train_d[1])
            if isinstance(val_d, tuple):
                val_d = (normalizer(val_d[0]), val_d[1])
            elif val_d is not None:
                notes.append("normalize: validation data is a Dataset; normalise it yourself")
        else:
            notes.append("normalize: skipped (features are not an in-memory float tensor)")
    return PreparedData(train_d, val_d, desc, normalizer, tuple(notes))
