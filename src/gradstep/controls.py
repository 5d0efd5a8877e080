"""A run's optimisation controls, built from its config: the gradient monitor (norm, clipping,
non-finite steps, health), the learning-rate schedule and early stopping.

:meth:`Controls.check` runs before the run directory exists — every monitor a control names is
checked against what the run logs, so a mistake is a one-line error and nothing is written —
and :meth:`Controls.callbacks` then builds the callbacks, in the order the loop needs them: the
gradient monitor first (its values go on the logger's lines), the schedule and early stopping
after the logger (a step line shows the rate the step used). After the loop,
:meth:`Controls.restore_best` puts early stopping's best weights back and :meth:`Controls.summary`
gives what they add to ``summary.json`` (``health``, ``early_stop``, ``schedule``).

Example::

    controls = Controls.check(cfg, optimizer, task, has_val=True, batches=len(train_batches))
    callbacks = [*controls.callbacks(model, warn, before=[logger])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradstep.callbacks.base import Callback
from gradstep.callbacks.early_stopping import EarlyStopping
from gradstep.callbacks.grad_norm import GradMonitor
from gradstep.callbacks.lr_scheduler import LRScheduler
from gradstep.checkpoint.changes import LENGTH_SCHEDULES, schedule_length
from gradstep.config import Config
from gradstep.errors import NonFiniteError, UserError
from gradstep.metrics import resolve_monitor
from gradstep.optim import LRSchedule
from gradstep.state import TrainState


@dataclass
class Controls:
    cfg: Config
    schedule: LRSchedule | None
    plateau_monitor: tuple[str, str]
    stop_monitor: tuple[str, str]
    monitor: GradMonitor | None = None
    stopper: EarlyStopping | None = None
    restored: bool = field(default=False)

    @classmethod
    def check(
        cls,
        cfg: Config,
        optimizer: torch.optim.Optimizer,
        task: str,
        has_val: bool,
        batches: int,
    ) -> Controls:
        """The schedule and the monitors of plateau and early stopping, checked."""
        sc, es = cfg.schedule, cfg.early_stop
        plateau = resolve_monitor("[schedule] monitor", sc.monitor, sc.mode, task, has_val)
        extra = ("lr", "grad_norm") if cfg.train.grad_norm else ("lr",)
        stop = resolve_monitor("[early_stop] monitor", es.monitor, es.mode, task, has_val, extra)
        if cfg.checkpoint.policy == "grad_norm_peak" and not cfg.train.grad_norm:
            raise UserError('[checkpoint] policy = "grad_norm_peak" needs [train] grad_norm = true')
        schedule = None
        if sc.name != "none":
            schedule = LRSchedule(sc, optimizer, schedule_length(cfg.model_dump(), batches))
        return cls(cfg, schedule, plateau, stop)

    def keep_schedule_length(
        self, saved: dict[str, Any], batches: int, warn: Callable[[str], None]
    ) -> None:
        """A resumed run keeps its schedule's length. A cosine, warm-up cosine or one-cycle
        schedule without ``t_max`` spans the whole run; when a resume changes ``epochs`` or
        ``max_steps`` the schedule goes on as it was set up — as a restored PyTorch scheduler
        does (its ``T_max`` is in its state) — instead of stretching under the steps already
        taken (the rate would jump). Its length is then written out as ``[schedule] t_max``, so
        ``config.toml`` says what the run uses. ``saved``: the checkpoint's config."""
        sc = self.cfg.schedule
        if self.schedule is None or sc.name not in LENGTH_SCHEDULES or sc.t_max is not None:
            return
        before = saved.get("schedule", {}).get("t_max") or schedule_length(saved, batches)
        now = schedule_length(self.cfg.model_dump(), batches)
        if before == now:
            return
        sc.t_max = int(before)
        self.schedule = LRSchedule(sc, self.schedule.optimizer, sc.t_max)
        if now > before:
            warn(
                f"[schedule] {sc.name} keeps its length, t_max = {before} {sc.interval}s, as the "
                f"run was set up; the {now - before} {sc.interval}s after it train at its final "
                "rate"
            )

    def set_lr(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """``optim.lr`` changed by a resume, applied after the optimizer's and the schedule's
        state are restored: ``lr`` is the run's *base* rate from the next step on. Without a
        schedule it is the rate; with one it replaces the schedule's base, so the schedule keeps
        its shape and position (a step schedule already decayed twice gives ``lr * gamma**2``;
        one-cycle's peak follows it when ``max_lr`` is unset); with ``plateau`` it is the rate
        now, and later cuts start from it."""
        if self.schedule is None:
            for group in optimizer.param_groups:
                group["lr"] = lr
            return
        self.schedule.base = [lr] * len(self.schedule.base)
        if self.schedule.cfg.name == "plateau":
            self.schedule.lrs = [lr] * len(self.schedule.lrs)
        self.schedule.apply()

    def callbacks(
        self, model: nn.Module, warn: Callable[[str], None], before: Sequence[Callback]
    ) -> list[Callback]:
        """The gradient monitor, ``before`` (the logger and the bar), then the schedule and
        early stopping."""
        c = self.cfg
        self.monitor = GradMonitor(
            model,
            grad_norm=c.train.grad_norm,
            per_layer=c.train.grad_norm_per_layer,
            clip_norm=c.train.clip_norm,
            clip_value=c.train.clip_value,
            on_nonfinite=c.train.on_nonfinite,
            explode_norm=c.health.explode_norm,
            explode_factor=c.health.explode_factor,
            vanish_norm=c.health.vanish_norm,
            window=c.health.window,
            log_every=c.train.log_every,
            warn=warn,
        )
        out: list[Callback] = [self.monitor, *before]
        if self.schedule is not None:
            out.append(LRScheduler(self.schedule, self.plateau_monitor))
        if c.early_stop.patience is not None:
            self.stopper = EarlyStopping(
                *self.stop_monitor,
                patience=c.early_stop.patience,
                min_delta=c.early_stop.min_delta,
                restore_best=c.early_stop.restore_best,
            )
            out.append(self.stopper)
        return out

    def restore_best(self, model: nn.Module, user_callbacks: Sequence[Callback]) -> None:
        """Early stopping's best weights back into ``model`` — ours, or a user's own
        :class:`EarlyStopping` — after the final checkpoint (which keeps the true last state)."""
        stoppers = [self.stopper] if self.stopper is not None else []
        stoppers += [cb for cb in user_callbacks if isinstance(cb, EarlyStopping)]
        for stopper in stoppers:
            self.restored = stopper.restore(model) or self.restored

    def summary(self, state: TrainState) -> dict[str, Any]:
        """``health``, ``early_stop`` and ``schedule`` for ``summary.json``."""
        assert self.monitor is not None
        out: dict[str, Any] = {"health": self.monitor.summary()}
        if state.oom_events:
            out["health"]["out_of_memory"] = list(state.oom_events)
        if self.stopper is not None:
            out["early_stop"] = self.stopper.summary()
        elif self.restored:
            out["early_stop"] = {"restored_best": True}
        if self.schedule is not None:
            sc = self.schedule.cfg
            out["schedule"] = {"name": sc.name, "interval": sc.interval, "final_lr": state.lr}
            if sc.name == "plateau":
                out["schedule"]["reductions"] = self.schedule.reductions
        return out

    def raise_if_nonfinite(self) -> None:
        """``on_nonfinite = "fail"``: the run met a NaN/Inf; raise, naming the step."""
        if self.monitor is not None and self.monitor.nonfinite_step is not None:
            raise NonFiniteError(
                f'{self.monitor.nonfinite_reason}: the run stopped (on_nonfinite = "fail"); '
                "lower the learning rate, clip gradients (clip_norm), or skip such steps "
                '(on_nonfinite = "skip")'
            )
