"""How ``Trainer.fit`` sets checkpointing up: the monitored metric, the resume fingerprint, and
the :class:`~gradstep.callbacks.checkpoint.Checkpointer` with its :class:`RunSnapshot`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradstep import dist, preflight
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.checkpoint.resume import data_fingerprint
from gradstep.checkpoint.snapshot import RunSnapshot, model_info
from gradstep.config import Config
from gradstep.errors import UserError, did_you_mean


def checkpoint_monitor(cfg: Config, task: str, has_val: bool) -> tuple[str, str]:
    """``[checkpoint] monitor`` and ``mode``, resolved and checked against what the run logs."""
    metric = "mae" if task == "regression" else "acc"
    prefixes = ("train", "val") if has_val else ("train",)
    known = [f"{p}_{m}" for p in prefixes for m in ("loss", metric)]
    monitor = cfg.checkpoint.monitor or ("val_loss" if has_val else "train_loss")
    if monitor not in known:
        hint = "" if has_val or not monitor.startswith("val_") else " (this run has no validation)"
        raise UserError(
            f"[checkpoint] monitor = {monitor!r}: not a metric this run logs{hint}"
            f"{did_you_mean(monitor, known)}; it logs {', '.join(known)}"
        )
    mode = cfg.checkpoint.mode
    if mode == "auto":
        mode = "max" if monitor.endswith("_acc") else "min"
    return monitor, mode


def run_fingerprint(cfg: Config, batch_size: int | None, train_data: Any) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed by this run (see ``resume``)."""
    return {
        "model": cfg.model.name,
        "model_args": cfg.model.args,
        "optimizer": cfg.optim.name,
        "batch_size": batch_size,
        "accumulate": cfg.train.accumulate,
        "drop_last": cfg.train.drop_last,
        "shuffle": cfg.train.shuffle,
        "seed": cfg.run.seed,
        "world_size": dist.world_size(),
        "data": data_fingerprint(train_data),
    }


def make_checkpointer(
    cfg: Config,
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Any,
    task: str,
    outputs: int,
    fingerprint: dict[str, Any],
    base_dir: Path | None,
    monitor: tuple[str, str],
    warn: Callable[[str], None],
) -> Checkpointer:
    """The run's checkpoint callback; give it the run's callbacks (``snapshot.callbacks``)."""
    x, _ = preflight.probe(data.train)
    info = model_info(
        name=cfg.model.name,
        args=cfg.model.args,
        base_dir=base_dir,
        task=task,
        loss=cfg.train.loss,
        sample_shape=tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else (),
        outputs=outputs,
        normalizer=data.normalizer,
        source=cfg.data.source,
        target=cfg.data.target,
    )
    metrics_path = run_dir / "metrics.jsonl"
    snapshot = RunSnapshot(
        model, optimizer, info, fingerprint, cfg.model_dump(), base_dir, metrics_path
    )
    return Checkpointer(
        run_dir / "checkpoints",
        every=cfg.checkpoint.every,
        keep=cfg.checkpoint.keep,
        monitor=monitor[0],
        mode=monitor[1],
        on_save_error=cfg.checkpoint.on_save_error,
        snapshot=snapshot,
        warn=warn,
    )
