"""Drive the learning-rate schedule (:class:`gradstep.optim.LRSchedule`) from the loop's hooks.

After each optimizer step (``interval = "step"``) or at each full epoch's end (``"epoch"``) the
schedule advances one interval, the way ``scheduler.step()`` follows ``optimizer.step()`` in the
hand-written loop. ``plateau`` acts on each new value of its monitored metric instead: after
each validation for ``val_*``, at each epoch's end for ``train_*``. The rate in effect is logged
as ``lr`` (step lines show the rate the step used; epoch records the rate of the epoch's last
step). The schedule's counters are this callback's ``state_dict``, so checkpoints resume it.

Example::

    sched = LRSchedule(cfg.schedule, optimizer, total=epochs)
    trainer = gs.Trainer(..., callbacks=[LRScheduler(sched, monitor=("val_loss", "min"))])
"""

from __future__ import annotations

from typing import Any

from gradstep.callbacks.base import Callback
from gradstep.optim import LRSchedule
from gradstep.state import TrainState


class LRScheduler(Callback):
    """Args: ``schedule`` (an :class:`~gradstep.optim.LRSchedule`), ``monitor`` (plateau's
    metric and mode, e.g. ``("val_loss", "min")``)."""

    def __init__(self, schedule: LRSchedule, monitor: tuple[str, str] | None = None) -> None:
        self.schedule = schedule
        self.plateau = schedule.cfg.name == "plateau"
        self.per_step = schedule.cfg.interval == "step" and not self.plateau
        self.monitor = monitor or ("val_loss", "min")

    def on_fit_start(self, state: TrainState) -> None:
        self.schedule.apply()  # t = 0, or where a resumed run left it

    def on_step_end(self, state: TrainState) -> None:
        if self.per_step:
            self.schedule.advance()

    def on_validation_end(self, state: TrainState) -> None:
        if self.plateau and self.monitor[0].startswith("val_"):
            self._observe(state.val_metrics)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.plateau:
            if self.monitor[0].startswith("train_"):
                self._observe(state.train_metrics)
        elif not self.per_step and not state.history[-1].get("partial"):
            self.schedule.advance()

    def _observe(self, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor[0].partition("_")[2])
        if value is not None:
            self.schedule.observe(float(value), self.monitor[1])

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)
