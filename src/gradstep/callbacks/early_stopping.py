"""Stop training when a metric has stopped improving, and keep the best weights.

At each epoch's end the monitored value (any key of the epoch record: ``val_loss``,
``train_acc``, ``grad_norm``, ...) is compared with the best so far; a change of more than
``min_delta`` in the right direction (``mode``) is an improvement. After ``patience`` epochs
without one, training stops (``stop_reason`` says why, in ``summary.json`` too). Like Keras'
``EarlyStopping`` and Lightning's, the count is in epochs (measurements), not steps.

``restore_best``: the best epoch's weights are copied (on the CPU) when they are measured, and
put back into the model when the run ends — after the final checkpoint, which keeps the true
last state so that a resumed run stays exact. The copy is saved with checkpoints (this
callback's ``tensor_state_dict``), so a resumed run restores the same weights.

Example::

    trainer = gs.Trainer(epochs=100, patience=5)          # [early_stop] patience = 5
    trainer = gs.Trainer(epochs=100, callbacks=[EarlyStopping("val_acc", "max", patience=3)])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradstep.callbacks.base import Callback
from gradstep.models.instance import unwrap_compiled
from gradstep.state import TrainState


class EarlyStopping(Callback):
    """Args: ``monitor`` (a key of the epoch record), ``mode`` (``"min"``/``"max"``),
    ``patience`` (epochs without improvement), ``min_delta``, ``restore_best``."""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        self.monitor, self.mode = monitor, mode
        self.patience, self.min_delta = patience, min_delta
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.restored = False

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.history[-1].get(self.monitor)
        if value is None:
            return
        if self._improves(float(value)):
            self.best, self.wait = float(value), 0
            self.best_epoch, self.best_step = state.epoch, state.global_step
            if self.restore_best and state.model is not None:
                self.best_weights = {
                    k: v.detach().to("cpu", copy=True)
                    for k, v in unwrap_compiled(state.model).state_dict().items()
                }
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = state.epoch
            state.stop(
                f"early stopping: {self.monitor} did not improve for {self.patience} epochs "
                + (
                    f"(best {self.best:.6g} at epoch {self.best_epoch})"
                    if self.best is not None
                    else "(it was never finite)"
                )
            )

    def restore(self, model: torch.nn.Module) -> bool:
        """Put the best weights back (the trainer calls this after the final checkpoint)."""
        if not self.restore_best or self.best_weights is None:
            return False
        unwrap_compiled(model).load_state_dict(self.best_weights)  # keys without _orig_mod.
        self.restored = True
        return True

    def summary(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "stopped_epoch": self.stopped_epoch,
            "restored_best": self.restored,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.best_step = state.get("best_step")
        self.wait = int(state.get("wait", 0))
        self.stopped_epoch = state.get("stopped_epoch")

    def tensor_state_dict(self) -> dict[str, torch.Tensor]:
        """The best weights' copy, saved in the checkpoint's ``callbacks.safetensors``."""
        return dict(self.best_weights) if self.best_weights is not None else {}

    def load_tensor_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take saved best weights back; NaN in any is refused (``ValueError``): restoring them
        would end a run with a model that predicts nothing. (A resume checks them before
        anything changes, Inf in a parameter too: ``ResumePlan.load_into``.)"""
        for name, t in tensors.items():
            if (t.is_floating_point() or t.is_complex()) and bool(torch.isnan(t).any()):
                raise ValueError(f"EarlyStopping's best weights: {name} holds NaN values")
        self.best_weights = dict(tensors) if tensors else None
