"""``gs.Trainer``: settings in, a trained model and a run directory out.

:meth:`Trainer.fit` sets a run up — data, model, checks, run directory, callbacks — and hands it
to :func:`gradstep.loop.fit_loop`. Every user mistake is found before the run directory exists
(:mod:`gradstep.preflight`), so a failed start leaves nothing behind.

Example::

    import gradstep as gs
    trainer = gs.Trainer(epochs=10, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9)
    result = trainer.fit(model, train=(X, y), val=(Xv, yv))
    result.history[-1]["val_acc"]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from gradstep import dist, preflight
from gradstep.callbacks import Callback, CallbackList, MetricsLogger, ProgressBar
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.checkpoint.content import set_rng_state
from gradstep.checkpoint.files import CheckpointError, SaveError
from gradstep.checkpoint.load import Checkpoint
from gradstep.checkpoint.resume import (
    data_fingerprint,
    describe_differences,
    find_resume_checkpoint,
    orphan_newer,
    relink,
    restore,
    truncate_metrics,
)
from gradstep.checkpoint.snapshot import RunSnapshot, model_info
from gradstep.config import Config, config_from_flat, load_config, to_toml
from gradstep.data import Normalizer, PreparedData, fix_targets, make_batches, prepare_data
from gradstep.data.convert import to_data
from gradstep.errors import UserError
from gradstep.logging.base import Sink
from gradstep.logging.console import ConsoleSink, print_summary
from gradstep.logging.jsonl import JsonlSink
from gradstep.loop import LoopParts, evaluate_batches, fit_loop, predict_batches
from gradstep.losses import TASK, build_loss
from gradstep.metrics import Meter
from gradstep.models import DataShape, build_model
from gradstep.optim import build_optimizer
from gradstep.rundir import create_run_dir, write_atomic, write_json
from gradstep.state import TrainState
from gradstep.summary import __version__, build_summary


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    ``history`` has one dict per epoch (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
    ``lr``, ``time_s``, ...); ``summary`` is what ``summary.json`` holds.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None
    config: Config = field(repr=False)

    @property
    def final(self) -> dict[str, float]:
        return self.summary["final"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (dropout, init, ...)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``"auto"``: cuda if available, then mps, then cpu. Asking for a missing one is an error."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"[run] device = {name!r}: CUDA is not available on this machine")
    if name == "mps" and not mps_ok:
        raise UserError("[run] device = 'mps': MPS is not available on this machine")
    return torch.device(name)


def checkpoint_monitor(cfg: Config, task: str, has_val: bool) -> tuple[str, str]:
    """``[checkpoint] monitor`` and ``mode``, resolved and checked against what the run logs."""
    metric = "mae" if task == "regression" else "acc"
    prefixes = ("train", "val") if has_val else ("train",)
    known = [f"{p}_{m}" for p in prefixes for m in ("loss", metric)]
    monitor = cfg.checkpoint.monitor or ("val_loss" if has_val else "train_loss")
    if monitor not in known:
        from gradstep.errors import did_you_mean

        hint = "" if has_val or not monitor.startswith("val_") else " (this run has no validation)"
        raise UserError(
            f"[checkpoint] monitor = {monitor!r}: not a metric this run logs{hint}"
            f"{did_you_mean(monitor, known)}; it logs {', '.join(known)}"
        )
    mode = cfg.checkpoint.mode
    if mode == "auto":
        mode = "max" if monitor.endswith("_acc") else "min"
    return monitor, mode


def sample_shape(data: Any) -> tuple[int, ...]:
    x, _ = preflight.probe(data)
    return tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _warner(console: Console) -> Callable[[str], None]:
    """Warnings go to stderr (quiet where ``console`` is: off the main process)."""
    err = Console(stderr=True, quiet=console.quiet)

    def warn(message: str) -> None:
        err.print(f"gradstep: warning: {message}", markup=False, highlight=False, soft_wrap=True)

    return warn


class Trainer:
    """Train, evaluate and predict with one set of settings.

    Args:
        config: a full :class:`~gradstep.config.Config` (what ``gradstep fit`` uses), or None.
        callbacks: extra :class:`~gradstep.callbacks.Callback` objects, called after the built-in
            ones.
        **settings: any config key by its flat name — ``epochs``, ``batch_size`` (int or
            ``"full"``), ``accumulate``, ``lr``, ``optimizer``, ``momentum``, ``seed``, ``device``,
            ``loss``, ``log_every``, ``val_split``, ``normalize``, ``run_dir``, ``name``, ... (see
            :data:`gradstep.config.FLAT_KEYS`). Unknown names raise :class:`UserError`.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise UserError("pass either config= or keyword settings, not both")
        self.config = config if config is not None else config_from_flat(settings)
        self.callbacks = list(callbacks)
        self.base_dir: Path | None = None
        self.default_name: str | None = None
        self.model: nn.Module | None = None
        self.normalizer: Normalizer | None = None
        self.device = torch.device("cpu")

    @classmethod
    def from_config(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Trainer:
        """A trainer for a TOML config file (or the defaults), with ``--set`` style overrides."""
        trainer = cls(load_config(path, list(overrides)))
        if path is not None:
            trainer.base_dir = Path(path).resolve().parent
            trainer.default_name = Path(path).stem
        return trainer

    # --- fit -------------------------------------------------------------------------------

    def fit(
        self,
        model: nn.Module | str | None = None,
        train: Any = None,
        val: Any = None,
        *,
        resume: str | Path | None = None,
        force: bool = False,
    ) -> FitResult:
        """Train ``model`` (a module, a model name, or None for ``[model] name``) on ``train``
        (``(X, y)`` tensors or arrays, a Dataset or a DataLoader; None for ``[data] source``),
        validating on ``val`` (or a ``val_split`` of ``train``) after every epoch.

        ``resume``: a run directory (its newest checkpoint that verifies), one checkpoint, or
        ``"latest"`` (the run directory this trainer's name points at) — training continues
        exactly where that checkpoint left it, in that run directory. A checkpoint from another
        model, batch size, accumulation, seed or data is refused unless ``force=True``."""
        started = time.perf_counter()
        cfg = self.config.model_copy(deep=True)
        seed_everything(cfg.run.seed)
        device = pick_device(cfg.run.device)
        task = TASK[cfg.train.loss]
        data = prepare_data(cfg, task, train, val, self.base_dir)
        model, model_name = self._model(cfg, model, data, task)
        model.to(device)
        train_b, val_b, outputs = self._batches(cfg, data, model, model_name, task, device)
        optimizer = build_optimizer(cfg.optim, model.parameters())
        loss_fn = build_loss(cfg.train.loss, cfg.train.label_smoothing)
        monitor, mode = checkpoint_monitor(cfg, task, val_b is not None)
        if train is not None:
            cfg.data.source = "(python)"
        fingerprint = {
            "model": cfg.model.name,
            "model_args": cfg.model.args,
            "batch_size": train_b.batch_size,
            "accumulate": cfg.train.accumulate,
            "drop_last": cfg.train.drop_last,
            "shuffle": cfg.train.shuffle,
            "seed": cfg.run.seed,
            "world_size": dist.world_size(),
            "data": data_fingerprint(data.train),
        }
        main = dist.is_main_process()
        console = Console(quiet=not main)
        resumed, restarted = None, False
        if resume is not None:
            resumed = self._find_resume(cfg, resume, model_name, data, fingerprint, force)

        # Everything the user can get wrong has been checked: from here on we write.
        if resumed is not None:
            ckpt, run_dir, saved = resumed
            orphan_newer(run_dir / "checkpoints", ckpt.step if ckpt else 0, _warner(console))
            write_atomic(run_dir / "config.toml", to_toml(cfg))
            truncate_metrics(run_dir / "metrics.jsonl", saved.get("metrics_bytes", 0))
            if ckpt is None:
                resumed = None  # nothing to restore: the run starts again, in its directory
                restarted = True
        else:
            run_dir = self._create_run_dir(cfg, model_name, data) if main else None
        state = TrainState(
            epochs=cfg.train.epochs,
            batches_per_epoch=len(train_b),
            accumulate=cfg.train.accumulate,
            max_steps=cfg.train.max_steps,
        )
        metrics_path = run_dir / "metrics.jsonl" if run_dir is not None else None
        sinks: list[Sink] = [ConsoleSink(console)]
        if metrics_path is not None:
            sinks.append(JsonlSink(metrics_path))
        callbacks: list[Callback] = [MetricsLogger(sinks, cfg.train.log_every)]
        show_bar = cfg.train.progress is True or (
            cfg.train.progress == "auto" and console.is_terminal
        )
        if show_bar and main:
            callbacks.append(ProgressBar(console))
        checkpointer = None
        if run_dir is not None and cfg.checkpoint.every != "never":
            info = model_info(
                name=cfg.model.name,
                args=cfg.model.args,
                base_dir=self.base_dir,
                task=task,
                loss=cfg.train.loss,
                sample_shape=sample_shape(data.train),
                outputs=outputs,
                normalizer=data.normalizer,
                source=cfg.data.source,
                target=cfg.data.target,
            )
            snapshot = RunSnapshot(
                model, optimizer, info, fingerprint, cfg.model_dump(), self.base_dir, metrics_path
            )
            checkpointer = Checkpointer(
                run_dir / "checkpoints",
                every=cfg.checkpoint.every,
                keep=cfg.checkpoint.keep,
                monitor=monitor,
                mode=mode,
                on_save_error=cfg.checkpoint.on_save_error,
                snapshot=snapshot,
                warn=_warner(console),
            )
            callbacks.append(checkpointer)
        callbacks += self.callbacks
        if checkpointer is not None:
            snapshot.callbacks = [cb for cb in callbacks if cb is not checkpointer]
            snapshot.callbacks.append(checkpointer)
        self._announce(console, cfg, model, model_name, data, train_b, val_b, device, run_dir)
        parts = LoopParts(
            model=model,
            optimizer=optimizer,
            loss_fn=loss_fn,
            task=task,
            train=train_b,
            val=val_b,
            callbacks=CallbackList(callbacks),
            val_every=None if cfg.train.val_every == "epoch" else int(cfg.train.val_every),
        )
        self.model, self.normalizer, self.device = model, data.normalizer, device
        self._loss_fn, self._task = loss_fn, task
        resumed_from: dict[str, Any] | None = None
        if restarted:
            resumed_from = {"checkpoint": None, "step": 0}
        if resumed is not None:
            ckpt, _, saved = resumed
            assert ckpt is not None
            restore(
                ckpt,
                saved,
                model=model,
                optimizer=optimizer,
                state=state,
                callbacks=callbacks,
                device=device,
                new_meter=lambda: Meter(task),
            )
            if checkpointer is not None:
                relink(ckpt, checkpointer.best_name)
            resumed_from = {"checkpoint": str(ckpt.path.resolve()), "step": ckpt.step}
            self._announce_resume(console, state, ckpt)
        start_steps, start_samples = state.global_step, state.samples_seen
        if resumed is not None:
            set_rng_state(resumed[2]["rng"])  # last: nothing may draw between this and the loop
        train_started = time.perf_counter()
        try:
            fit_loop(parts, state)
        finally:
            train_time = time.perf_counter() - train_started
            summary = build_summary(
                cfg=cfg,
                state=state,
                model=model,
                device=device,
                data_info=self._data_info(cfg, state, data, train_b),
                timings={
                    "wall_time_s": time.perf_counter() - started,
                    "train_time_s": train_time,
                    "samples_per_second": _rate(state.samples_seen - start_samples, train_time),
                    "steps_per_second": _rate(state.global_step - start_steps, train_time),
                },
                run_dir=run_dir,
                checkpointer=checkpointer,
                resumed_from=resumed_from,
            )
            if run_dir is not None:
                write_json(run_dir / "summary.json", summary)
        print_summary(console, summary, str(run_dir) if run_dir else "(none)")
        if checkpointer is not None and checkpointer.failures:
            if cfg.checkpoint.on_save_error == "stop":
                raise SaveError(checkpointer.failures[-1] + "; the run stopped")
        return FitResult(model, state.history, summary, run_dir, cfg)

    def _find_resume(
        self,
        cfg: Config,
        resume: str | Path,
        model_name: str,
        data: PreparedData,
        fingerprint: dict[str, Any],
        force: bool,
    ) -> tuple[Checkpoint | None, Path, dict[str, Any]]:
        if str(resume) == "latest":
            name = cfg.run.name or self._default_run_name(cfg, model_name)
            target = Path(cfg.run.dir) / name
            if not target.is_dir():
                raise CheckpointError(f"resume='latest': no run directory {target}")
        else:
            target = Path(resume)
        ckpt, run_dir = find_resume_checkpoint(target, _warner(Console()))
        cfg.run.name = run_dir.name
        if ckpt is None:
            _warner(Console())(
                f"{run_dir}: no checkpoint that verifies (killed before its first was written?); "
                "the run starts again from the beginning, in the same directory"
            )
            return None, run_dir, {"metrics_bytes": 0}
        saved = ckpt.state()
        differences = describe_differences(saved.get("fingerprint", {}), fingerprint)
        if differences and not force:
            raise CheckpointError(
                f"{ckpt.path}: written by a different run ({'; '.join(differences)}); resume with "
                "the same settings, or force it (--force, or fit(..., force=True))"
            )
        return ckpt, run_dir, saved

    def _announce_resume(self, console: Console, state: TrainState, ckpt: Checkpoint) -> None:
        where = (
            f"epoch {state.epoch}, after batch {state.batch}/{state.batches_per_epoch}"
            if state.in_epoch
            else f"the end of epoch {state.epoch}"
        )
        console.print(
            f"  resumed from {ckpt.path.name} (step {state.global_step}, {where})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if state.stop_reason == "max_steps" and (
            state.max_steps is None or state.global_step < state.max_steps
        ):
            state.should_stop, state.stop_reason = False, None  # max_steps was raised
        done = state.should_stop or (not state.in_epoch and state.epoch >= state.epochs)
        if done:
            console.print(
                f"  the run had already finished ({state.stop_reason or 'completed'}); "
                "raise [train] epochs or max_steps to train further",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def _model(
        self, cfg: Config, model: nn.Module | str | None, data: PreparedData, task: str
    ) -> tuple[nn.Module, str]:
        if isinstance(model, nn.Module):
            cls = type(model)
            cfg.model.name, cfg.model.args = f"{cls.__module__}:{cls.__qualname__}", {}
            return model, cls.__name__.lower()
        if model is not None and not isinstance(model, str):
            raise UserError(
                f"model: expected an nn.Module or a model name, got {type(model).__name__}"
            )
        name = model if isinstance(model, str) else cfg.model.name
        x, y = preflight.probe(data.train)
        sample_shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()
        shape = DataShape(sample_shape, preflight.num_outputs(task, data.train, data.val, y))
        built, args = build_model(name, cfg.model.args, shape, self.base_dir)
        cfg.model.name, cfg.model.args = name, args
        return built, name.rpartition(":")[2].lower()

    def _batches(
        self,
        cfg: Config,
        data: PreparedData,
        model: nn.Module,
        model_name: str,
        task: str,
        device: torch.device,
    ) -> tuple[Any, Any, int]:
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
        if n and b:
            smallest = b if (cfg.train.drop_last or n % b == 0) else min(b, n % b)
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

    def _default_run_name(self, cfg: Config, model_name: str) -> str:
        source = "data" if cfg.data.source == "(python)" else cfg.data.source
        return self.default_name or f"{model_name}-{source.rpartition(':')[2]}"

    def _create_run_dir(self, cfg: Config, model_name: str, data: PreparedData) -> Path:
        if cfg.run.name is None:
            cfg.run.name = self._default_run_name(cfg, model_name)
        run_dir = create_run_dir(cfg.run.dir, cfg.run.name)
        write_atomic(run_dir / "config.toml", to_toml(cfg))
        return run_dir

    def _announce(
        self,
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
            f"batch {train_b.batch_size} × accumulate {cfg.train.accumulate}, "
            f"{len(train_b)} batches = {-(-len(train_b) // cfg.train.accumulate)} steps per epoch; "
            f"{cfg.optim.name} lr {cfg.optim.lr}; device {device}",
        ]
        if data.normalizer is not None:
            lines.append(f"  normalize: {data.normalizer.describe()} (from the training split)")
        lines += [f"  note: {n}" for n in data.notes]
        if run_dir is not None:
            lines.append(f"  run directory: {run_dir}")
            if run_dir.name != cfg.run.name:
                lines.append(f"  ({Path(cfg.run.dir) / str(cfg.run.name)} already holds a run)")
        for line in lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _data_info(
        self, cfg: Config, state: TrainState, data: PreparedData, train_b: Any
    ) -> dict[str, Any]:
        return {
            "description": data.description,
            "train_samples": train_b.num_samples,
            "batches_per_epoch": state.batches_per_epoch,
            "steps_per_epoch": state.steps_per_epoch,
            "effective_batch": (train_b.batch_size or 0) * cfg.train.accumulate * dist.world_size(),
            "normalizer": None
            if data.normalizer is None
            else {k: v.flatten().tolist() for k, v in data.normalizer.state_dict().items()},
        }

    # --- evaluate / predict ----------------------------------------------------------------

    def _require_model(self, model: nn.Module | None) -> nn.Module:
        model = model if model is not None else self.model
        if model is None:
            raise UserError("no model: call fit() first or pass model=")
        return model

    def evaluate(self, data: Any, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and accuracy (or MAE) of the fitted model on ``data``, prepared as in training
        (same normalisation), in eval mode without gradients: ``{"loss": ..., "acc": ...}``."""
        model = self._require_model(model)
        d = to_data(data, "evaluation data")
        task = TASK[self.config.train.loss]
        if isinstance(d, tuple):
            x, y = d
            y = fix_targets(y, task, "evaluation data")
            if self.normalizer is not None:
                x = self.normalizer(x)
            out = preflight.run_probe(model, x[:2], self.device, "model")
            if preflight.check_outputs(out, y[:2], task, self.config.train.loss, "model"):
                y = y.unsqueeze(1)
            d = (x, y)
        bs = self.config.train.batch_size
        batches = make_batches(
            d,
            None if bs == "full" else bs,
            device=self.device,
            shuffle=False,
            num_workers=self.config.data.num_workers,
        )
        loss_fn = build_loss(self.config.train.loss, self.config.train.label_smoothing)
        return evaluate_batches(model, batches.epoch(0), loss_fn, task)

    def predict(self, data: Any, model: nn.Module | None = None) -> torch.Tensor:
        """The model's raw outputs (logits for classifiers) for ``data`` — an ``X`` tensor or
        array, an ``(X, y)`` pair, or a Dataset — with training's normalisation applied, in eval
        mode under ``inference_mode``; on the CPU. ``outputs.argmax(1)`` gives classes."""
        model = self._require_model(model)
        if isinstance(data, tuple | list) and len(data) == 2:
            data = data[0]
        if isinstance(data, torch.Tensor | np.ndarray):
            x = to_data((data, np.zeros(len(data))), "prediction data")[0]  # type: ignore[index]
            if self.normalizer is not None:
                x = self.normalizer(x)
            bs = self.config.train.batch_size
            xs = x.to(self.device).split(len(x) if bs == "full" else bs)
            return predict_batches(model, xs)
        d = to_data(data, "prediction data")
        batches = make_batches(d, 256, device=self.device, shuffle=False)
        return predict_batches(model, (x for x, _ in batches.epoch(0)))
