"""Checks made before the first training step, so that a user mistake costs seconds, not an
epoch, and leaves no run directory behind.

The model is run once on two training samples (eval mode, no gradients: no BatchNorm statistics
change, no RNG is drawn) to check that it accepts the data's shape and that its output fits the
loss and the labels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from gradstep.data.convert import DataLike, class_count_problem, num_samples
from gradstep.errors import UserError, first_line


def probe(data: DataLike) -> tuple[Any, torch.Tensor]:
    """The first (up to) two samples of ``data`` as a batch ``(x, y)``, on the CPU."""
    if isinstance(data, tuple):
        return data[0][:2], data[1][:2]
    if isinstance(data, DataLoader):
        batch = next(iter(data))
    else:
        batch = default_collate([data[i] for i in range(min(2, len(data)))])  # type: ignore[arg-type]
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise UserError(
            "the dataset's samples must be (input, target) pairs"
            + ("" if isinstance(data, DataLoader) else "; set [data] input_key and target_key")
        )
    return batch[0], batch[1]


def num_outputs(task: str, train: DataLike, val: DataLike | None, y_probe: torch.Tensor) -> int:
    """Classes (multiclass) or the target's width, to size a model's output layer.

    In-memory labels are read whole (one ``max``). A Dataset's class count comes, without
    reading its samples, from ``[model.args] num_classes``, its ``classes`` or ``targets``
    attribute; only without them are its samples scanned, in a DataLoader with ``[data]
    num_workers``, saying so (see :mod:`gradstep.data.samples`).

    Labels that would make an output layer no machine holds (a label of 10⁹) are refused here
    for a Dataset; in-memory data was checked, naming its file, by
    :func:`gradstep.data.check_class_ids`.
    """
    if task != "multiclass":
        return int(y_probe[0].numel()) if y_probe.ndim > 1 else 1
    from gradstep.data.samples import count_highest_label

    highest, samples = -1, 0
    datasets, whats = [], []
    for d, what in ((train, "training"), (val, "validation")):
        if d is None:
            continue
        if isinstance(d, tuple):
            highest = max(highest, int(d[1].max()))
        else:
            datasets.append(d)
            whats.append(what)
        try:
            samples += num_samples(d)
        except TypeError:  # a DataLoader over an IterableDataset has no length
            pass
    if datasets:
        highest = max(highest, count_highest_label(datasets, whats))
    problem = class_count_problem(highest, samples)
    if problem is not None:
        raise UserError(f"training data: {problem}")
    return max(highest + 1, 2)


def run_probe(model: nn.Module, x: Any, device: torch.device, model_name: str) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            xd = x.to(device) if isinstance(x, torch.Tensor) else x
            out = model(xd)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        first = first_line(err)
        raise UserError(f"[model] {model_name!r} rejects input of shape {shape}: {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UserError(f"[model] {model_name!r} returned {type(out).__name__}, expected a tensor")
    return out.cpu()


def check_outputs(
    out: torch.Tensor, y: torch.Tensor, task: str, loss: str, model_name: str
) -> bool:
    """Raise for an output that cannot meet the targets; return True if 1-D targets should be
    reshaped to ``(N, 1)`` to match a one-column output (mse, l1, bce_with_logits)."""
    if task == "multiclass":
        if out.ndim != 2:
            raise UserError(
                f"[model] {model_name!r} outputs shape {tuple(out.shape)}; loss = 'cross_entropy' "
                "needs (batch, classes) logits"
            )
        return False
    if out.shape[1:] == y.shape[1:]:
        return False
    if y.ndim == 1 and out.shape[1:] == (1,):
        return True
    raise UserError(
        f"[model] {model_name!r} outputs shape {tuple(out.shape)} but the targets have shape "
        f"{tuple(y.shape)}; loss = {loss!r} needs them to match"
    )


def check_labels(data: DataLike | None, classes: int, what: str) -> None:
    """Cross-entropy labels must lie in ``[0, classes)`` (checked for in-memory data)."""
    if not isinstance(data, tuple):
        return
    y = data[1]
    lo, hi = int(y.min()), int(y.max())  # sync: once, before training
    if lo < 0 or hi >= classes:
        bad = lo if lo < 0 else hi
        raise UserError(
            f"{what}: label {bad} is outside [0, {classes}) — the model has {classes} outputs "
            "([model.args] num_classes)"
        )


def check_batchnorm(model: nn.Module, smallest_batch: int) -> None:
    """BatchNorm1d in training mode cannot normalise a batch of one sample (torch raises)."""
    has_bn = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    if has_bn and smallest_batch == 1:
        raise UserError(
            "[train] batch_size: the model has BatchNorm1d, which fails on a batch of 1 sample in "
            "training; use a larger batch_size, or drop_last = true if only the last batch is 1"
        )


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def accumulation_note(model: nn.Module, accumulate: int, batch_size: int | None) -> str | None:
    """The one warning accumulation deserves: BatchNorm normalises each micro-batch on its own,
    so ``batch_size × accumulate`` is not the same as one batch of that size for BN."""
    if accumulate > 1 and has_batchnorm(model):
        return (
            f"gradient accumulation with BatchNorm: BN normalises each micro-batch of {batch_size} "
            f"samples on its own, so its statistics differ from one batch of "
            f"{(batch_size or 0) * accumulate} (the gradients are otherwise the same)"
        )
    return None
