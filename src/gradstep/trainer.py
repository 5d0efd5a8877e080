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
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from gradstep import dist, elastic, preflight
from gradstep.callbacks import Callback, CallbackList, MetricsLogger, ProgressBar
from gradstep.callbacks.change_log import ChangeLog
from gradstep.checkpoint.files import CheckpointError, SaveError
from gradstep.checkpoint.resume import ResumePlan, find_resume_checkpoint
from gradstep.checkpoint.setup import (
    checkpoint_monitor,
    make_checkpointer,
    run_fingerprint,
    run_model_info,
)
from gradstep.config import Config, config_from_flat, load_config, to_toml
from gradstep.controls import Controls
from gradstep.data import Normalizer, PreparedData, fix_targets, make_batches, prepare_data
from gradstep.data.convert import to_data
from gradstep.diagnose import diagnose_fit, format_verdicts
from gradstep.errors import NonFiniteError, UserError
from gradstep.interrupt import StopOnSignal, interrupted
from gradstep.logging.base import Sink, cannot_write, os_reason, target_of
from gradstep.logging.console import ConsoleSink, print_summary
from gradstep.logging.jsonl import JsonlSink
from gradstep.logging.plots import write_plots_or_warn
from gradstep.logging.tensorboard import TensorBoardSink
from gradstep.loop import INTERRUPTED, LoopParts, evaluate_batches, fit_loop, predict_batches
from gradstep.losses import TASK, build_loss
from gradstep.metrics import Meter
from gradstep.models import DataShape, build_model
from gradstep.models.instance import instance_spec, outputs_note, unwrap_compiled
from gradstep.optim import build_optimizer
from gradstep.predictor import Predictor
from gradstep.run_parts import announce, data_info, loop_batches
from gradstep.rundir import create_run_dir, write_atomic, write_json
from gradstep.runlock import RunLock
from gradstep.state import TrainState
from gradstep.summary import build_summary
from gradstep.trust import CodeTrust, trust_rule


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    ``model`` is the trained network (the module ``fit`` was given or built), which takes
    prepared input as the training batches held it; ``predictor`` is that network with the
    training preprocessing in front, which takes raw input. ``history`` has one dict per epoch
    (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``time_s``, ...);
    ``summary`` is what ``summary.json`` holds; ``model_info`` what the run's checkpoints
    record in ``model.json`` (the preprocessing among it).

    Example::

        result = trainer.fit(model, train=(X, y))
        result.predictor(X_raw).argmax(1)      # = trainer.predict(X_raw).argmax(1)
    """

    model: nn.Module
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None
    config: Config = field(repr=False)
    model_info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def final(self) -> dict[str, float]:
        return self.summary["final"]

    @cached_property
    def predictor(self) -> Predictor:
        """:attr:`model` with the run's preprocessing in front: a
        :class:`~gradstep.predictor.Predictor` that takes raw input (as ``gs.load_model`` of
        the run's checkpoint does) and equals ``trainer.predict`` on it. It shares the network
        — its weights, and so its train/eval mode: it is put in eval mode when first read."""
        return Predictor(self.model, self.model_info).eval()


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
            ``nproc=N`` (N > 1) is refused with how to launch instead: a script runs on N
            processes under ``torchrun --nproc-per-node N script.py``, where ``fit`` shards
            the data and syncs the ranks by itself.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        **settings: Any,
    ) -> None:
        from gradstep.launch import check_nproc

        check_nproc(settings.pop("nproc", None))  # several processes: torchrun starts them
        if config is not None and settings:
            raise UserError("pass either config= or keyword settings, not both")
        self.config = config if config is not None else config_from_flat(settings)
        self.callbacks = list(callbacks)
        self.base_dir: Path | None = None
        # None: the config is the user's own; set by `gradstep resume`, whose config and
        # checkpoints come from a run directory (see gradstep.trust)
        self.code_trust: CodeTrust | None = None
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
        main = dist.is_main_process()
        console = Console(quiet=not main)
        warn = _warner(console)
        found = None
        world = dist.world_size()
        self._fit_index = elastic.begin_fit()
        if resume is None:  # torchrun restarted the workers: continue the run
            resume = elastic.restart_target(cfg.run.dir, self._fit_index)
            if resume is not None:
                console.print(f"elastic restart {elastic.restart_count()}: resuming {resume}")
        if resume is not None:  # verified first: a resumed run's base_dir comes from it
            found = find_resume_checkpoint(self._resume_target(resume, cfg, model, train), warn)
            self._base_dir_from(found[0])
        with trust_rule(self.code_trust):  # code the run directory names: see gradstep.trust
            data = prepare_data(cfg, task, train, val, self.base_dir, warn=warn)
            model, model_name = self._model(cfg, model, data, task)
        net = unwrap_compiled(model)  # what checkpoints hold: a torch.compile'd model's module
        if world > 1:  # torchrun started this process: join the group (see gradstep.dist)
            dist.accumulate_per_world(cfg, world)
            device = dist.init(cfg.dist.backend, timeout_s=cfg.dist.timeout_s, device=device)
            step = found[0].step if found is not None and found[0] is not None else -1
            dist.same_everywhere(step, "the checkpoint resumed from")
        model.to(device)
        if world > 1:
            dist.prepare_batchnorm(cfg, net, device, warn)
        train_b, val_b, outputs = loop_batches(cfg, data, model, model_name, task, device)
        optimizer = build_optimizer(cfg.optim, model.parameters())
        loss_fn = build_loss(cfg.train.loss, cfg.train.label_smoothing)
        monitor = checkpoint_monitor(cfg, task, val_b is not None)
        controls = Controls.check(cfg, optimizer, task, val_b is not None, len(train_b))
        if train is not None:
            cfg.data.source = "(python)"
        fingerprint = run_fingerprint(cfg, train_b.batch_size, data.train)
        plan = None
        changes: list[dict[str, Any]] = []  # what resumes changed (gradstep.checkpoint.changes)
        if found is not None:
            plan = ResumePlan.check(found, fingerprint, force, warn, len(train_b))
            plan.load_into(net, optimizer)
            changes = plan.settle(cfg, controls, force=force, batches=len(train_b), warn=warn)

        # Everything the user can get wrong has been checked: from here on we write — holding
        # the run directory's lock (one run, one writer: see gradstep.runlock), and stopping
        # cleanly at a step's end on SIGINT / SIGTERM (see gradstep.interrupt).
        with ExitStack() as held:
            stop = held.enter_context(StopOnSignal(warn))
            try:
                if plan is not None:
                    if main:  # before anything in the run directory changes
                        held.enter_context(RunLock(plan.run_dir))
                    run_dir: Path | None = plan.prepare(to_toml(cfg), warn) if main else None
                else:
                    run_dir = self._create_run_dir(cfg, model_name, data) if main else None
                    if run_dir is not None:
                        held.enter_context(RunLock(run_dir))
            except OSError as err:  # a full disk, a read-only or unwritable directory: one line
                where: Path | str | None = target_of(err)
                if where is None:  # a refused write names no file; config.toml is the one written
                    where = (
                        plan.run_dir / "config.toml"
                        if plan is not None
                        else f"config.toml of the new run {cfg.run.name} in {cfg.run.dir}"
                    )
                raise SaveError(cannot_write(where, err)) from err
            state = TrainState(
                epochs=cfg.train.epochs,
                batches_per_epoch=len(train_b),
                accumulate=cfg.train.accumulate,
                max_steps=cfg.train.max_steps,
            )
            sinks: list[Sink] = [ConsoleSink(console)]
            if run_dir is not None:
                sinks.append(JsonlSink(run_dir / "metrics.jsonl"))
                if cfg.log.tensorboard:
                    resumed_step = None  # a resume, even one that restarts, cuts older events
                    if plan is not None:
                        resumed_step = plan.ckpt.step if plan.ckpt is not None else 0
                    sinks.append(TensorBoardSink(run_dir, resumed_step))
            logging: list[Callback] = [MetricsLogger(sinks, cfg.train.log_every)]
            show_bar = cfg.train.progress is True or (
                cfg.train.progress == "auto" and console.is_terminal
            )
            if show_bar and main:
                logging.append(ProgressBar(console))
            callbacks = controls.callbacks(model, warn, before=logging)
            grad_monitor = controls.monitor
            assert grad_monitor is not None
            # model.json's record: the in-memory predictor and state.preprocess use the same
            state.model_info = run_model_info(
                cfg, data, task=task, outputs=outputs, base_dir=self.base_dir
            )
            checkpointer = None
            if (run_dir is not None or world > 1) and cfg.checkpoint.every != "never":
                checkpointer = make_checkpointer(
                    cfg,
                    run_dir,
                    model=net,
                    optimizer=optimizer,
                    data=data,
                    task=task,
                    outputs=outputs,
                    fingerprint=fingerprint,
                    base_dir=self.base_dir,
                    monitor=monitor,
                    warn=warn,
                    before_save=grad_monitor.safe_to_save,
                )
            callbacks += self.callbacks
            if changes:  # kept in every checkpoint, so later resumes keep the list
                callbacks.append(ChangeLog(changes))
            if checkpointer is not None:
                # last: a checkpoint is taken after every other callback has seen the step or epoch,
                # so their saved state is the state a resumed run must continue from
                callbacks.append(checkpointer)
                checkpointer.snapshot.callbacks = callbacks  # type: ignore[attr-defined]
            announce(console, cfg, model, model_name, data, train_b, val_b, device, run_dir)
            note = preflight.accumulation_note(model, cfg.train.accumulate, train_b.batch_size)
            if note is not None:
                warn(note)
            note = outputs_note(outputs, task, (data.train, data.val))
            if note is not None:
                warn(note)
            parts = LoopParts(
                # DDP when distributed, else the model itself
                model=dist.wrap(model, device, sync_buffers=not cfg.train.sync_batchnorm),
                optimizer=optimizer,
                loss_fn=loss_fn,
                task=task,
                train=train_b,
                val=val_b,
                callbacks=CallbackList(callbacks),
                val_every=None if cfg.train.val_every == "epoch" else int(cfg.train.val_every),
                grads=grad_monitor if grad_monitor.active else None,
                on_oom=cfg.train.on_oom,
                warn=warn,
                stop=dist.AgreedStop(stop) if world > 1 else stop,
                world=world,
            )
            self.model, self.normalizer, self.device = model, data.normalizer, device
            self._loss_fn, self._task = loss_fn, task
            resumed_from = None
            if plan is not None:
                resumed_from = plan.restore(
                    checkpointer=checkpointer,
                    say=lambda text: console.print(text, markup=False, highlight=False),
                    state=state,
                    callbacks=callbacks,
                    device=device,
                    new_meter=lambda: Meter(task),
                )
            if plan is not None and plan.changed("optim.lr"):
                controls.set_lr(optimizer, cfg.optim.lr)  # over the restored optimizer's rate
            start_steps, start_samples = state.global_step, state.samples_seen
            if plan is not None:
                plan.reseed()  # last: nothing may draw from an RNG between this and the loop
            train_started = time.perf_counter()
            failure: BaseException | None = None  # what ended the loop, if something did
            try:
                fit_loop(parts, state)
            except BaseException as exc:
                failure = exc
                # as the loop says it; also for a failed on_fit_start, which the loop does not catch
                state.stop_reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
                raise
            finally:
                train_time = time.perf_counter() - train_started
                controls.restore_best(model, self.callbacks)
                summary = build_summary(
                    cfg=cfg,
                    state=state,
                    model=model,
                    device=device,
                    data_info=data_info(cfg, state, data, train_b),
                    timings={
                        "wall_time_s": time.perf_counter() - started,
                        "train_time_s": train_time,
                        "samples_per_second": _rate(state.samples_seen - start_samples, train_time),
                        "steps_per_second": _rate(state.global_step - start_steps, train_time),
                    },
                    run_dir=run_dir,
                    checkpointer=checkpointer,
                    resumed_from=resumed_from,
                    extra={**controls.summary(state), "changes": changes},
                    error=failure,
                )
                # a log file that could not be written may end in half a line: diagnose from memory
                logs = None if isinstance(failure, SaveError) else run_dir
                verdicts = diagnose_fit(state.history, summary, cfg.model_dump(), logs, warn)
                summary["diagnosis"] = [v.to_dict() for v in verdicts]
                unsaved = None  # why summary.json could not be written (the disk said)
                if run_dir is not None:
                    try:
                        write_json(run_dir / "summary.json", summary)
                    except OSError as err:
                        unsaved = os_reason(err)
                if failure is not None and unsaved is not None:
                    also = f"; summary.json not written either ({unsaved})"
                    if isinstance(failure, SaveError | NonFiniteError):  # the cause, said first
                        raise type(failure)(f"{failure}{also}") from failure
                    warn(f"cannot write {run_dir / 'summary.json'}: {unsaved}")  # then the error
            if run_dir is not None and cfg.log.plots and state.history and unsaved is None:
                write_plots_or_warn(run_dir, warn)  # (not on a disk that just refused the summary)
            print_summary(console, summary, str(run_dir) if run_dir else "(none)")
            if verdicts and cfg.log.diagnose:
                console.print(
                    format_verdicts(verdicts), markup=False, highlight=False, soft_wrap=True
                )
            # past the last collective: drop the DDP wrapper (its reducer holds the group),
            # then leave the group, before rank 0 raises what stopped the run
            if isinstance(parts.stop, dist.AgreedStop):
                parts.stop.settle()
            parts.model = state.model = None
            dist.shutdown(wait=failure is None)
            try:
                if checkpointer is not None and checkpointer.failures:
                    if cfg.checkpoint.on_save_error == "stop":
                        raise SaveError(checkpointer.failures[-1] + "; the run stopped")
                controls.raise_if_nonfinite()
            except (SaveError, NonFiniteError) as err:  # what stopped the run, then the summary
                if unsaved is None:
                    raise
                raise type(err)(f"{err}; summary.json not written either ({unsaved})") from err
            if unsaved is not None:
                raise SaveError(
                    f"cannot write {run_dir / 'summary.json'}: {unsaved}; the run itself ended "
                    f"({state.stop_reason}, step {state.global_step})"
                )
            if state.stop_reason == INTERRUPTED and (stop.signum is not None or world > 1):
                # under DDP, a rank another rank's signal stopped ends as that rank does
                signum = stop.signum if stop.signum is not None else signal.SIGTERM
                raise interrupted(signum, state, run_dir, checkpointer, cfg.data.source)
            return FitResult(model, state.history, summary, run_dir, cfg, state.model_info or {})

    def _resume_target(self, resume: str | Path, cfg: Config, model: Any, train: Any) -> Path:
        """The run directory or checkpoint ``resume`` names; ``"latest"``: the run directory
        this trainer's name points at (the name a new run would have been given)."""
        if str(resume) != "latest":
            return Path(resume)
        if cfg.run.name is not None:
            name = cfg.run.name
        elif isinstance(model, nn.Module):
            name = self.default_name or f"{type(model).__name__.lower()}-" + (
                "data" if train is not None else cfg.data.source.rpartition(":")[2]
            )
        else:
            label = (model if isinstance(model, str) else cfg.model.name).rpartition(":")[2]
            source = "data" if train is not None else cfg.data.source.rpartition(":")[2]
            name = self.default_name or f"{label.lower()}-{source}"
        target = Path(cfg.run.dir) / name
        if not target.is_dir():
            raise CheckpointError(f"resume='latest': no run directory {target}")
        return target

    def _base_dir_from(self, ckpt: Any) -> None:
        """Under a trust rule (``gradstep resume``), relative paths and model files are found
        from the ``base_dir`` the verified checkpoint records — never from a file that did not
        verify — and that folder may not lie inside a run directory."""
        if self.code_trust is None:
            return
        base = ckpt.model_info.get("base_dir") if ckpt is not None else None
        if base is not None and not isinstance(base, str):
            raise CheckpointError(f"{ckpt.path}/model.json: base_dir is not a path")
        self.base_dir = Path(base) if base else None
        if self.base_dir is not None:
            self.code_trust.check_dir(self.base_dir, "base_dir")

    def _model(
        self, cfg: Config, model: nn.Module | str | None, data: PreparedData, task: str
    ) -> tuple[nn.Module, str]:
        if isinstance(model, nn.Module):
            # its class, and the arguments its constructor recorded (gs.save_init_args), so a
            # checkpoint can rebuild it; a torch.compile'd model is named by the module it wraps
            cfg.model.name, cfg.model.args = instance_spec(model)
            return model, type(unwrap_compiled(model)).__name__.lower()
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

    def _default_run_name(self, cfg: Config, model_name: str) -> str:
        source = "data" if cfg.data.source == "(python)" else cfg.data.source
        return self.default_name or f"{model_name}-{source.rpartition(':')[2]}"

    def _create_run_dir(self, cfg: Config, model_name: str, data: PreparedData) -> Path:
        if cfg.run.name is None:
            cfg.run.name = self._default_run_name(cfg, model_name)
        run_dir = create_run_dir(cfg.run.dir, cfg.run.name)
        write_atomic(run_dir / "config.toml", to_toml(cfg))
        # under torchrun: what a restarted worker resumes
        elastic.record(cfg.run.dir, run_dir, getattr(self, "_fit_index", 0))
        return run_dir

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
