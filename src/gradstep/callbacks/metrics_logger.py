"""Turns the loop's progress into records and hands each to every logging sink.

Records (also the lines of ``metrics.jsonl``):

* ``{"kind": "step", "step", "epoch", "batch", "loss", "lr", ...}`` every ``log_every`` steps of
  an epoch (counted from the epoch's start, like the classic ``if (i + 1) % 50 == 0``), where
  ``loss`` is the mean over the steps since the previous line (one host sync per line);
* ``{"kind": "val", "step", "epoch", "val_loss", "val_acc" | "val_mae"}`` after each validation;
* ``{"kind": "epoch", "step", "epoch", "train_loss", ..., "val_loss", ..., "lr", "time_s"}`` at
  each epoch's end — the same dict that ``FitResult.history`` holds.

Epochs and steps are 1-based: ``"step": 363`` is the 363rd optimizer step.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradstep.callbacks.base import Callback
from gradstep.logging.base import Sink
from gradstep.state import TrainState


class MetricsLogger(Callback):
    """Args: ``sinks`` (where records go), ``log_every`` (steps between step records)."""

    def __init__(self, sinks: Sequence[Sink], log_every: int = 50) -> None:
        self.sinks = list(sinks)
        self.log_every = log_every

    def _write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)

    def on_fit_start(self, state: TrainState) -> None:
        for sink in self.sinks:
            sink.open(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step_in_epoch % self.log_every:
            return
        extra, state.log_values = state.log_values, {}
        state.last_log = record = {
            "kind": "step",
            "step": state.global_step,
            "epoch": state.epoch,
            "batch": state.batch,
            "loss": state.train_meter.window_loss(),  # the sync, once per log line
            "lr": state.lr,
            "epochs": state.epochs,
            "batches": state.batches_per_epoch,
            "total_steps": state.total_steps,
            **extra,
        }
        self._write(record)

    def on_validation_end(self, state: TrainState) -> None:
        self._write(
            {
                "kind": "val",
                "step": state.global_step,
                "epoch": state.epoch,
                **{f"val_{k}": v for k, v in state.val_metrics.items()},
            }
        )

    def on_epoch_end(self, state: TrainState) -> None:
        self._write({"kind": "epoch", **state.history[-1], "epochs": state.epochs})

    def on_fit_end(self, state: TrainState) -> None:
        for sink in self.sinks:
            sink.close()

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        for sink in self.sinks:
            sink.close()
