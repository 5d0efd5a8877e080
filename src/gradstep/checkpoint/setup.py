"""How ``Trainer.fit`` sets checkpointing up: the monitored metric, the resume fingerprint, and
the :class:`~gradstep.callbacks.checkpoint.Checkpointer` with its :class:`RunSnapshot`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradstep import dist, preflight
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.callbacks.grad_norm import GradNormPeak
from gradstep.checkpoint.ranks import RankParts
from gradstep.checkpoint.resume import data_fingerprint
from gradstep.checkpoint.snapshot import RunSnapshot, model_info
from gradstep.config import Config
from gradstep.metrics import resolve_monitor


def checkpoint_monitor(cfg: Config, task: str, has_val: bool) -> tuple[str, str]:
    """``[checkpoint] monitor`` and ``mode``, resolved and checked against what the run logs."""
    c = cfg.checkpoint
    return resolve_monitor("[checkpoint] monitor", c.monitor, c.mode, task, has_val)


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
        "effective_batch": (
            batch_size * cfg.train.accumulate * dist.world_size() if batch_size else None
        ),
        "data": data_fingerprint(train_data),
    }


def run_model_info(
    cfg: Config, data: Any, *, task: str, outputs: int, base_dir: Path | None
) -> dict[str, Any]:
    """What every checkpoint of this run records in ``model.json`` — the model's name and
    args, the task, the training sample shape and normalisation — built from the run's parts.

    The in-memory ``result.predictor`` and ``state.preprocess`` use this same record, so they
    prepare input exactly as a predictor loaded from the run's checkpoints does."""
    x, _ = preflight.probe(data.train)
    return model_info(
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
        features=getattr(data, "features", None),
        pixels=getattr(data, "pixels", False),
        input_range=getattr(data, "input_range", None),
    )


def make_checkpointer(
    cfg: Config,
    run_dir: Path | None,
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
    before_save: Callable[[Any], bool] | None = None,
) -> Checkpointer:
    """The run's checkpoint callback; give it the run's callbacks (``snapshot.callbacks``).
    ``model`` is the module whose weights are saved (a compiled model's own module).

    Under DDP every rank has one: rank 0's writes (``run_dir``), the others' (``run_dir`` None)
    follow it, each giving its generators and running sums to every checkpoint (see
    :mod:`gradstep.checkpoint.ranks`)."""
    ranks = RankParts() if dist.distributed() else None
    if run_dir is None:
        return Checkpointer(
            Path(), every=cfg.checkpoint.every, snapshot=_Follower(), ranks=ranks, follower=True
        )
    info = run_model_info(cfg, data, task=task, outputs=outputs, base_dir=base_dir)
    c = cfg.checkpoint
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
        peak=GradNormPeak(c.window, c.fluctuation, c.loss_ratio)
        if c.policy == "grad_norm_peak"
        else None,
        before_save=before_save,
        ranks=ranks,
    )


class _Follower:
    """A follower's snapshot: it never takes one (its part goes to rank 0's)."""

    callbacks: list[Any]

    def __call__(self, *_: Any) -> Any:
        raise AssertionError("a follower checkpointer writes nothing")
