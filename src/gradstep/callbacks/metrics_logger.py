"""Turns the loop's progress into records and hands each to every logging sink.

Records (also the lines of ``metrics.jsonl``):

* ``{"kind": "step", "step", "epoch", "batch", "loss", "lr", ...}`` every ``log_every`` steps of
  an epoch (counted from the epoch's start, like the classic ``if (i + 1) % 50 == 0``), where
  ``loss`` is the mean over the steps since the previous line (one host sync per line);
* ``{"kind": "val", "step", "epoch", "val_loss", "val_acc" | "val_mae"}`` after each validation;
* ``{"kind": "epoch", "step", "epoch", "train_loss", ..., "val_loss", ..., "lr", "time_s"}`` at
  each epoch's end — the same dict that ``FitResult.history`` holds.

Epochs and steps are 1-based: ``"step": 363`` is the 363rd optimizer step.

A sink that cannot write (``metrics.jsonl`` or the TensorBoard file on a full disk, a read-only
or unwritable run directory) stops the run with one
:class:`~gradstep.checkpoint.files.SaveError` naming the file and the step:
``cannot write runs/x/metrics.jsonl: No space left on device; the run stopped at step 123``.
It is raised, not a ``state.stop()``: the step's checkpoint (taken after this callback) must not
be written, since it would count log lines that are not (or half) on disk; the newest checkpoint
before it is where a resume continues, and the trainer still writes ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradstep.callbacks.base import Callback
from gradstep.checkpoint.files import SaveError
from gradstep.logging.base import Sink, cannot_write
from gradstep.state import TrainState


class MetricsLogger(Callback):
    """Args: ``sinks`` (where records go), ``log_every`` (steps between step records)."""

    def __init__(self, sinks: Sequence[Sink], log_every: int = 50) -> None:
        self.sinks = list(sinks)
        self.log_every = log_every

    def _write(self, record: dict) -> None:
        for sink in self.sinks:
            try:
                sink.write(record)
            except OSError as err:
                raise self._failed(sink, err, record["step"]) from err

    def _failed(self, sink: Sink, err: OSError, step: int) -> SaveError:
        """The one-line error for a sink that could not write, naming its file."""
        where = err.filename or type(sink).__name__
        return SaveError(f"{cannot_write(where, err)}; the run stopped at step {step}")

    def _close_quietly(self) -> None:
        """Close every sink, raising nothing: an error is already on its way out."""
        for sink in self.sinks:
            try:
                sink.close()
            except OSError:
                pass

    def on_fit_start(self, state: TrainState) -> None:
        for sink in self.sinks:
            try:
                sink.open(state)
            except OSError as err:
                # the loop calls on_exception only once it has started: close what is open here
                self._close_quietly()
                raise self._failed(sink, err, state.global_step) from err

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
            try:
                sink.close()  # a file system may report a refused write only here
            except OSError as err:
                raise self._failed(sink, err, state.global_step) from err

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        self._close_quietly()  # never a second error over the one that brought us here
