"""Data for a run: load the source, check it, split off validation, fix target dtypes, normalise.

:func:`prepare_data` is the one entry point; see :mod:`gradstep.data.sources` for the sources,
:mod:`gradstep.data.batcher` for how samples become micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from gradstep.config import Config, DataSection
from gradstep.data.batcher import LoaderBatches, TensorBatches, make_batches
from gradstep.data.checks import check_finite, value_range
from gradstep.data.convert import DataLike, class_count_problem, is_pixels, num_samples, to_data
from gradstep.data.prep import Normalizer, split
from gradstep.data.samples import Counting, KeyedSamples, keyed, remember
from gradstep.data.sources import load
from gradstep.errors import UserError

__all__ = [
    "DataLike",
    "KeyedSamples",
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
    """The run's data, prepared. Besides the samples: what a checkpoint records about the input
    so that inference prepares raw input exactly as training did — the CSV feature columns'
    names in order (``features``), whether the input was 8-bit pixels divided by 255
    (``pixels``), and the training input's value range before normalisation (``input_range``,
    for in-memory data)."""

    train: DataLike
    val: DataLike | None
    description: str
    normalizer: Normalizer | None = None
    notes: tuple[str, ...] = ()
    features: tuple[str, ...] | None = None
    pixels: bool = False
    input_range: tuple[float, float] | None = None


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


def _pixels(train: Any) -> bool:
    """Whether in-memory training features are uint8 (scaled by :func:`to_data`)."""
    if isinstance(train, TensorDataset) and len(train.tensors) == 2:
        return is_pixels(train.tensors[0])
    return isinstance(train, tuple | list) and len(train) == 2 and is_pixels(train[0])


def _check_values(data: DataLike | None, what: str) -> tuple[float, float] | None:
    """NaN / Inf in ``data`` is bad input (see :mod:`gradstep.data.checks`): in-memory data is
    checked whole (returning its features' range), a Dataset on the samples probed."""
    if data is None:
        return None
    if isinstance(data, tuple):
        return value_range(data[0], data[1], what)
    if isinstance(data, DataLoader):
        return None  # its batches are the user's; the trainer probes the first
    from gradstep.preflight import probe

    try:
        x, y = probe(data)
    except (UserError, RuntimeError, TypeError, ValueError):
        return None  # not (input, target) pairs that stack: the trainer's probe says so
    for part, t in (("the input of its first samples", x), ("the target of its first samples", y)):
        if isinstance(t, torch.Tensor):
            check_finite(t, what, part)
    return None


def _given_normalizer(
    constants: list[Any], x: torch.Tensor, what: str, grey: bool = False
) -> Normalizer:
    """``[data] normalize = [mean, std]`` as a :class:`Normalizer` shaped for ``x``: one number
    each for every feature, or one per feature (per channel for images ``(N, C, ...)``; one
    channel for grey images ``(N, H, W)``: ``grey``)."""
    mean, std = constants
    if not isinstance(mean, list) or (grey and len(mean) == 1):
        shape = (1,) * max(x.ndim, 1)
        values = mean if isinstance(mean, list) else [mean]
        return Normalizer.given_constants(
            values, std if isinstance(std, list) else [std], shape, x.dtype
        )
    width = 1 if grey else x.shape[1] if x.ndim >= 2 else 1
    if len(mean) != width:
        unit = "channels" if x.ndim > 2 else "features"
        raise UserError(
            f"[data] normalize = [mean, std]: {len(mean)} values each, but {what} has "
            f"{width} {unit} per sample (shape {tuple(x.shape[1:])})"
        )
    shape = (1, width, *([1] * (x.ndim - 2)))
    return Normalizer.given_constants(mean, std, shape, x.dtype)


def prepare_data(
    cfg: Config,
    task: str,
    train: Any = None,
    val: Any = None,
    base_dir: Path | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> PreparedData:
    """Load (or take) the data, check it, split, fix targets and normalise, per ``cfg.data``.

    Checks, before anything trains: NaN / Inf in the features or targets (naming the file, the
    column or feature index and the first sample), Dataset samples that are not ``(input,
    target)`` pairs without ``[data] input_key`` / ``target_key``, labels that cannot be class
    ids. ``warn`` gets the line a Dataset's class scan says (see :mod:`gradstep.data.samples`).
    """
    notes: list[str] = []
    features: list[str] | None = None
    if train is None:
        if val is not None:
            raise UserError("validation data given without training data")
        loaded = load(cfg.data, cfg.run.seed, base_dir)
        train_d, val_d, desc = loaded.train, loaded.val, loaded.description
        features, pixels = loaded.features, loaded.pixels
        train_what, val_what = _source_names(cfg.data, val_d is not None)
    else:
        pixels = _pixels(train)
        train_d = to_data(train, "training data")
        val_d = to_data(val, "validation data") if val is not None else None
        desc = f"in-memory data: {num_samples(train_d)} samples"
        train_what, val_what = "training data", "validation data"
        if pixels:
            notes.append("uint8 features are 8-bit pixels: divided by 255, to [0, 1]")
    keys = cfg.data.input_key, cfg.data.target_key
    train_d = keyed(train_d, *keys, train_what)
    val_d = keyed(val_d, *keys, val_what) if val_d is not None else None
    # before the split: sample numbers in messages are the file's
    input_range = _check_values(train_d, train_what)
    _check_values(val_d, val_what)
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
        given = cfg.model.args.get("num_classes", cfg.model.args.get("out_features"))
        counting = Counting(
            given if isinstance(given, int) and not isinstance(given, bool) else None,
            cfg.data.num_workers,
            warn,
        )
        remember(train_d, counting)
        remember(val_d, counting)
    normalizer = None
    if isinstance(cfg.data.normalize, list):
        if not _is_float_features(train_d):
            raise UserError(
                f"[data] normalize = {cfg.data.normalize}: {train_what} is not an in-memory "
                "float tensor (a Dataset, or integer features); normalise in the Dataset's "
                "transform instead, or set normalize = false"
            )
        assert isinstance(train_d, tuple)
        grey = pixels and train_d[0].ndim == 3  # (N, H, W) 8-bit images: one channel
        normalizer = _given_normalizer(cfg.data.normalize, train_d[0], train_what, grey)
    elif cfg.data.normalize:
        if _is_float_features(train_d):
            assert isinstance(train_d, tuple)
            # (N, H, W) 8-bit images are one grey channel, not H channels of W values
            normalizer = Normalizer.fit(train_d[0], grey=pixels and train_d[0].ndim == 3)
        else:
            notes.append("normalize: skipped (features are not an in-memory float tensor)")
    if normalizer is not None:
        assert isinstance(train_d, tuple)
        train_d = (normalizer(train_d[0]), train_d[1])
        if isinstance(val_d, tuple):
            val_d = (normalizer(val_d[0]), val_d[1])
        elif val_d is not None:
            notes.append("normalize: validation data is a Dataset; normalise it yourself")
    return PreparedData(
        train_d,
        val_d,
        desc,
        normalizer,
        tuple(notes),
        tuple(features) if features else None,
        pixels,
        input_range,
    )
