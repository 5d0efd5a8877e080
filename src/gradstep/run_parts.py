"""The parts of a run that :meth:`gradstep.Trainer.fit` assembles besides the model and the
data: the loop's batches (after the checks a first batch allows), the lines that announce the
run, and the data's record in ``summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from gradstep import dist, preflight
from gradstep.config import Config
from gradstep.data import PreparedData, make_batches
from gradstep.errors import UserError
from gradstep.state import TrainState
from gradstep.summary import __version__


def loop_batches(
    cfg: Config,
    data: PreparedData,
    model: nn.Module,
    model_name: str,
    task: str,
    device: torch.device,
) -> tuple[Any, Any, int]:
    """The training and validation batches (sharded by rank under torchrun) and the model's
    output width, after the checks one probed batch allows: outputs against targets, labels
    against the outputs, BatchNorm against the smallest micro-batch a rank will see."""
    x, y = preflight.probe(data.train)
    out = preflight.run_probe(model, x, device, model_name)
    if preflight.check_outputs(out, y, task, cfg.train.loss, model_name):
        if not isinstance(data.train, tuple):
            raise UserError(
                f"the model outputs shape {tuple(out.shape)}; make the dataset's targets "
                f"shape (1,) per sample to match (they are {tuple(y.shape[1:])})"
            )
        data.train = (data.train[0], data.train[1].unsqueeze(1))
        if isinstance(data.val, tuple):
            data.val = (data.val[0], data.val[1].unsqueeze(1))
    if task == "multiclass":
        # in-memory data is checked whole; a Dataset by its first samples (the rest would
        # cost a pass over it)
        first = data.train if isinstance(data.train, tuple) else (x, y)
        preflight.check_labels(first, out.shape[1], "training data")
        preflight.check_labels(data.val, out.shape[1], "validation data")
    bs = cfg.train.batch_size
    common = dict(
        seed=cfg.run.seed,
        rank=dist.rank(),
        world_size=dist.world_size(),
        num_workers=cfg.data.num_workers,
    )
    train_b = make_batches(
        data.train,
        None if bs == "full" else bs,
        device=device,
        drop_last=cfg.train.drop_last,
        shuffle=cfg.train.shuffle,
        **common,
    )
    if len(train_b) == 0:
        raise UserError(
            f"[train] batch_size = {bs} with drop_last = true leaves no batch: the training "
            f"set has {train_b.num_samples} samples"
        )
    n, b = train_b.num_samples, train_b.batch_size
    world = dist.world_size()
    if world > 1 and not cfg.train.sync_batchnorm:  # each rank normalises its own share
        shares = [m // world for m in getattr(train_b, "blocks", None) or []]
        if shares and min(shares) <= 1 and preflight.has_batchnorm(model):
            raise UserError(
                f"[train] batch_size = {bs}: the epoch's last micro-batch of "
                f"{train_b.blocks[-1]} samples gives a rank {min(shares)} of them, which "
                "BatchNorm cannot normalise in training; set [train] sync_batchnorm = true "
                "(statistics over all ranks), or drop_last = true"
            )
    elif n and b:
        block = b * world
        smallest = block if (cfg.train.drop_last or n % block == 0) else min(block, n % block)
        preflight.check_batchnorm(model, smallest)
    val_b = None
    if data.val is not None:
        val_b = make_batches(
            data.val,
            None if bs == "full" else bs,
            device=device,
            drop_last=False,
            shuffle=False,
            **common,
        )
    outputs = int(out.shape[1]) if out.ndim > 1 else 1
    return train_b, val_b, outputs


def announce(
    console: Console,
    cfg: Config,
    model: nn.Module,
    model_name: str,
    data: PreparedData,
    train_b: Any,
    val_b: Any,
    device: torch.device,
    run_dir: Path | None,
) -> None:
    params = sum(p.numel() for p in model.parameters())
    val_n = val_b.num_samples if val_b is not None else 0
    lines = [
        f"gradstep {__version__}: {model_name} ({params:,} parameters) on {data.description}",
        f"  {train_b.num_samples} train / {val_n} validation samples; "
        f"batch {train_b.batch_size} × accumulate {cfg.train.accumulate}"
        + (f" × {dist.world_size()} processes" if dist.world_size() > 1 else "")
        + ", "
        f"{len(train_b)} batches = {-(-len(train_b) // cfg.train.accumulate)} steps per epoch; "
        f"{cfg.optim.name} lr {cfg.optim.lr}; device {device}",
    ]
    if data.normalizer is not None:
        origin = "as given" if data.normalizer.given else "from the training split"
        lines.append(f"  normalize: {data.normalizer.describe()} ({origin})")
    lines += [f"  note: {n}" for n in data.notes]
    if run_dir is not None:
        lines.append(f"  run directory: {run_dir}")
        if run_dir.name != cfg.run.name:
            lines.append(f"  ({Path(cfg.run.dir) / str(cfg.run.name)} already holds a run)")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def data_info(cfg: Config, state: TrainState, data: PreparedData, train_b: Any) -> dict[str, Any]:
    return {
        "description": data.description,
        "train_samples": train_b.num_samples,
        "batches_per_epoch": state.batches_per_epoch,
        "steps_per_epoch": state.steps_per_epoch,
        "batch_size": train_b.batch_size,
        # samples per optimizer step: no more than an epoch holds (batch GD with accumulate)
        "effective_batch": min(
            (train_b.batch_size or 0) * cfg.train.accumulate, train_b.num_samples
        )
        * dist.world_size(),
        "normalizer": None
        if data.normalizer is None
        else {k: v.flatten().tolist() for k, v in data.normalizer.state_dict().items()},
    }
