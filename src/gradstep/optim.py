"""Optimizers and learning-rate schedules.

``[optim] name``: sgd (momentum, nesterov, weight_decay), adam, adamw, rmsprop — each PyTorch's
own optimizer with PyTorch's defaults unless the config says otherwise; the learning rate
defaults per optimizer (see :data:`gradstep.config.DEFAULT_LR`).

``[schedule] name``: see :class:`LRSchedule`; :class:`gradstep.callbacks.LRScheduler` drives it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

import torch

from gradstep.config import OptimSection, ScheduleSection


def _power(gamma: float, n: int) -> float:
    """``gamma ** n``, infinite where it overflows (a growing ``gamma > 1`` over a long run):
    what PyTorch's schedulers would give, instead of an OverflowError mid-training."""
    try:
        return gamma**n
    except OverflowError:
        return math.inf


def build_optimizer(
    cfg: OptimSection, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # the config validates names


# --- learning-rate schedules ---------------------------------------------------------------------


class LRSchedule:
    """The learning rate as a function of ``t``, the intervals (steps or epochs) done so far.

    Closed forms of PyTorch's schedulers, so a resumed run needs only ``t`` (and plateau's
    counters) to continue exactly, and the state is plain JSON:

    * ``step``: ``base * gamma ** (t // step_size)`` (``StepLR``)
    * ``multistep``: ``base * gamma ** (number of milestones <= t)`` (``MultiStepLR``)
    * ``exponential``: ``base * gamma ** t`` (``ExponentialLR``)
    * ``cosine``: ``eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2``, held at
      ``eta_min`` after ``t_max`` (``CosineAnnealingLR``, without its restart)
    * ``warmup_cosine``: linear warm-up ``base * (t + 1) / (warmup + 1)`` for ``t < warmup``
      (the first step already learns), then cosine from ``base`` to ``eta_min`` over the rest
    * ``onecycle``: ``OneCycleLR`` with cosine annealing, from ``max_lr / div_factor`` up to
      ``max_lr`` over ``pct_start`` of ``t_max``, then down to
      ``max_lr / div_factor / final_div_factor``; momentum is left as ``[optim]`` sets it
      (PyTorch's ``cycle_momentum = True`` would change it behind the user's back)
    * ``plateau``: ``ReduceLROnPlateau`` (relative threshold): multiply by ``factor`` (not below
      ``min_lr``) when the monitored metric has not improved for ``patience`` measurements

    Example::

        sched = LRSchedule(cfg.schedule, optimizer, total=100)
        sched.apply()          # lr for t = 0
        sched.advance()        # after each step (or epoch): t += 1, lr updated
    """

    def __init__(self, cfg: ScheduleSection, optimizer: torch.optim.Optimizer, total: int) -> None:
        self.cfg = cfg
        self.optimizer = optimizer
        self.base = [float(g["lr"]) for g in optimizer.param_groups]
        self.t_max = max(1, cfg.t_max or total)
        warmup = cfg.warmup if cfg.warmup is not None else math.ceil(0.05 * self.t_max)
        self.warmup = min(warmup, self.t_max - 1) if cfg.name == "warmup_cosine" else 0
        self.t = 0
        # plateau's counters (ReduceLROnPlateau's names)
        self.best: float | None = None
        self.num_bad = 0
        self.cooldown_counter = 0
        self.lrs = list(self.base)
        self.reductions = 0

    def lr_at(self, t: int, base: float) -> float:
        c, name = self.cfg, self.cfg.name
        if name == "step":
            return base * _power(c.gamma, t // c.step_size)
        if name == "multistep":
            return base * _power(c.gamma, bisect.bisect_right(sorted(c.milestones), t))
        if name == "exponential":
            return base * _power(c.gamma, t)
        if name == "cosine":
            t = min(t, self.t_max)
            return c.eta_min + (base - c.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2
        if name == "warmup_cosine":
            if t < self.warmup:
                return base * (t + 1) / (self.warmup + 1)
            span = max(1, self.t_max - self.warmup)
            progress = min(1.0, (t - self.warmup) / span)
            return c.eta_min + (base - c.eta_min) * (1 + math.cos(math.pi * progress)) / 2
        if name == "onecycle":
            peak = c.max_lr if c.max_lr is not None else base
            start = peak / c.div_factor
            end = start / c.final_div_factor
            rise_end = float(c.pct_start * self.t_max) - 1
            fall_end = float(self.t_max - 1)
            t = min(t, self.t_max - 1)
            if t <= rise_end:
                lo, hi, pct = start, peak, t / rise_end if rise_end > 0 else 1.0
            else:
                lo, hi, pct = peak, end, (t - rise_end) / (fall_end - rise_end)
            return hi + (lo - hi) / 2 * (math.cos(math.pi * pct) + 1)
        return base  # none, plateau (plateau changes self.lrs itself)

    def apply(self) -> None:
        """Set every param group's lr for the current ``t``."""
        if self.cfg.name != "plateau":
            self.lrs = [self.lr_at(self.t, b) for b in self.base]
        for group, lr in zip(self.optimizer.param_groups, self.lrs, strict=True):
            group["lr"] = lr

    def advance(self) -> None:
        """One interval done."""
        self.t += 1
        self.apply()

    def observe(self, value: float, mode: str) -> bool:
        """plateau: one measurement of the monitored metric; True if the rate was cut."""
        c = self.cfg
        # ReduceLROnPlateau's rule, threshold_mode "rel" (NaN never improves)
        if self.best is None:
            improved = not math.isnan(value)
        elif mode == "min":
            improved = value < self.best * (1 - c.threshold)
        else:
            improved = value > self.best * (1 + c.threshold)
        if improved:
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad <= c.patience:
            return False
        cut = False
        for i, old in enumerate(self.lrs):
            new = max(old * c.factor, c.min_lr)
            if old - new > 1e-8:  # PyTorch's eps: a smaller change is not made
                self.lrs[i], cut = new, True
        self.cooldown_counter, self.num_bad = c.cooldown, 0
        self.apply()
        self.reductions += int(cut)
        return cut

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "base": self.base,
            "lrs": self.lrs,
            "best": self.best,
            "num_bad": self.num_bad,
            "cooldown_counter": self.cooldown_counter,
            "reductions": self.reductions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.base = [float(b) for b in state["base"]]
        self.lrs = [float(v) for v in state["lrs"]]
        self.best = state.get("best")
        self.num_bad = int(state.get("num_bad", 0))
        self.cooldown_counter = int(state.get("cooldown_counter", 0))
        self.reductions = int(state.get("reductions", 0))
