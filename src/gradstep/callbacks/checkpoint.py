"""Save checkpoints during fit: every epoch or every N steps, at the end, keeping the best.

Each checkpoint is a directory ``runs/<name>/checkpoints/step-000123/`` (see
:mod:`gradstep.checkpoint`) holding everything an exact resume needs: weights, optimizer,
progress counters, the epoch's running metrics, the history, every callback's ``state_dict``,
every RNG, and how many bytes of ``metrics.jsonl`` had been written. ``latest`` points at the
newest; ``best`` at the one whose weights scored best on ``monitor``.

With ``policy = "grad_norm_peak"`` (``peak=``) best is instead the first checkpoint taken at or
after the logged step where the gradient norm had passed its peak and settled, with the loss
down (:func:`gradstep.callbacks.grad_norm.settled_after_peak`); it never changes after that.

Which checkpoint can be "best" by a metric: only one taken at the step where the monitored value
was measured — after a validation for ``val_*``, at an epoch's end for ``train_*`` — so ``best``
holds exactly the weights that scored the value (Keras' ``ModelCheckpoint(save_best_only)``
and Lightning's ``ModelCheckpoint(monitor)`` mean the same; they can attach a stale value to a
step checkpoint).

A save that fails (disk full, permission denied) is recorded in :attr:`Checkpointer.failures`
naming the path; the previous checkpoints stay. ``on_save_error = "stop"`` ends the run at the
next checkpoint or epoch end after the failure is seen (``stop_reason = "checkpoint save
failed"``; the trainer then raises :class:`~gradstep.checkpoint.files.SaveError`);
``"continue"`` warns and goes on. Nothing claims a checkpoint that was not completely written.

Args:
    directory: the run's ``checkpoints`` folder.
    every: ``"epoch"``, a number of optimizer steps, or ``"never"`` (not even at the end).
    keep: how many of the newest to keep (best is kept besides).
    monitor / mode: the metric that picks best, and ``"min"`` or ``"max"``.
    snapshot: ``snapshot(state) -> Job`` builds the files of one checkpoint (the trainer's).
    peak: a :class:`~gradstep.callbacks.grad_norm.GradNormPeak` for ``grad_norm_peak``.
    before_save: called before each save; False skips it (the trainer reads the gradient
        monitor there, so a non-finite step is found first and nothing after it is saved).
    ranks: under DDP, a :class:`~gradstep.checkpoint.ranks.RankParts`: at every checkpoint
        each rank's generators and running sums are gathered into rank 0's ``state.json``.
    follower: on a rank other than 0 (DDP): the same hooks decide when a checkpoint is due, so
        the rank takes part in the gather at the same step, but it writes nothing. Every
        decision that leads to a gather reads only what all ranks agree on (the step, the
        epoch, a stop the loop agreed on); what only rank 0 knows (a failed write, before_save)
        is decided after it.

Example::

    Checkpointer(run_dir / "checkpoints", every=100, keep=3, monitor="val_acc", mode="max",
                 snapshot=make_job)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradstep.callbacks.base import Callback
from gradstep.callbacks.grad_norm import GradNormPeak
from gradstep.checkpoint.ranks import RankParts
from gradstep.checkpoint.writer import CheckpointWriter, Job, Outcome, step_dir_name
from gradstep.state import TrainState

STOP_REASON = "checkpoint save failed"


class Checkpointer(Callback):
    def __init__(
        self,
        directory: Path,
        *,
        every: int | str = "epoch",
        keep: int = 3,
        monitor: str = "val_loss",
        mode: str = "min",
        on_save_error: str = "stop",
        snapshot: Callable[..., Job],
        background: bool = True,
        warn: Callable[[str], None] | None = None,
        peak: GradNormPeak | None = None,
        before_save: Callable[[TrainState], bool] | None = None,
        ranks: RankParts | None = None,
        follower: bool = False,
    ) -> None:
        self.directory = directory
        self.every, self.monitor, self.mode = every, monitor, mode
        self._every_steps = every if isinstance(every, int) else 0
        self.on_save_error = on_save_error
        self.snapshot = snapshot
        self.ranks = ranks
        self.writer = None if follower else CheckpointWriter(directory, keep, background=background)
        self.warn = warn or (lambda msg: print(f"gradstep: warning: {msg}", file=sys.stderr))
        self.peak = peak  # policy "grad_norm_peak": best is the first checkpoint after it held
        self.before_save = before_save  # e.g. read the gradient monitor: no save after a NaN
        if peak is not None:
            self.monitor, self.mode = "grad_norm_peak", "first"
        # saved state (resume restores it)
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_name: str | None = None
        self.measured: dict[str, int] = {}  # "val" / "train" -> step of the latest measurement
        self.last_saved_step: int | None = None
        self.failures: list[str] = []
        self._failed = False  # DDP: a failed write not yet told to the other ranks
        # best as it was before each queued best job claimed it, to restore if its write fails
        self._claims: dict[str, tuple[float | None, int | None, str | None]] = {}

    # --- the monitored value --------------------------------------------------------------

    def _value(self, state: TrainState) -> float | None:
        """The monitored value if it was measured on the weights of this very step."""
        kind, _, metric = self.monitor.partition("_")
        if self.measured.get(kind) != state.global_step:
            return None
        source = state.val_metrics if kind == "val" else state.train_metrics
        value = source.get(metric)
        return None if value is None or not math.isfinite(value) else float(value)

    def _improves(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    # --- hooks ----------------------------------------------------------------------------

    def on_validation_end(self, state: TrainState) -> None:
        self.measured["val"] = state.global_step

    def on_step_end(self, state: TrainState) -> None:
        if self.peak is not None:
            rec = state.last_log
            if rec is not None and rec["step"] == state.global_step and "grad_norm" in rec:
                self.peak.observe(state.global_step, rec["grad_norm"], rec["loss"])
        # the per-step cost is this one test; finished writes are collected at each save and
        # epoch end (a failed one stops the run at the next of those)
        if self._every_steps and state.global_step % self._every_steps == 0:
            if not state.should_stop:  # a stopping run is saved once, at fit end
                self.save(state)

    def on_epoch_end(self, state: TrainState) -> None:
        # decided before a failed write is collected: every rank decides alike (see follower)
        due = self.every == "epoch" and not state.should_stop and state.epoch < state.epochs
        if self.writer is not None:
            self._collect(self.writer.poll(), state)  # cheap: no waiting
            if self._failed and not due:  # DDP: the loop's epoch-end check tells every rank
                state.stop(STOP_REASON)
        self.measured["train"] = state.global_step
        if due:
            self.save(state)

    def on_fit_end(self, state: TrainState) -> None:
        if self.every != "never" and (self.ranks is not None or state.stop_reason != STOP_REASON):
            self.save(state)
        if self.writer is not None:
            self._collect(self.writer.close(), state, at_end=True)

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        if self.writer is None:
            return
        try:
            outcomes = self.writer.close()  # let the checkpoints being written finish
        except BaseException:  # never hide the exception that brought us here
            return
        for outcome in outcomes:
            if outcome.error is not None:
                self.warn(str(outcome.error))

    # --- saving ---------------------------------------------------------------------------

    def save(self, state: TrainState) -> None:
        """Snapshot the state now; it is written in the background (see
        :class:`~gradstep.checkpoint.writer.CheckpointWriter`). A failed earlier write is dealt
        with first, and a run stopping for one writes nothing more. Under DDP every rank's
        part is gathered first (see ``follower``)."""
        if self.writer is not None:
            self._collect(self.writer.wait(self.writer.max_pending - 1), state)
        # on every rank (the gradient monitor's norms are the all-reduced ones: a non-finite
        # step is found by all at the same save), before the gather
        safe = self.before_save is None or self.before_save(state)
        parts = None
        if self.ranks is not None:  # rank 0's part says whether a write failed: all stop alike
            failed = self._failed or state.stop_reason == STOP_REASON
            parts = self.ranks.gather(state, failed=failed)
            if self.ranks.failed and state.stop_reason != STOP_REASON:
                state.stop(STOP_REASON)
        if self.writer is None:
            return  # a follower: its part is in rank 0's checkpoint
        if not safe:
            return  # never a checkpoint of weights after a non-finite step
        if state.stop_reason == STOP_REASON:
            return
        name = step_dir_name(state.global_step)
        if self.peak is not None:
            reached = self.peak.reached_step
            best = self.best_name is None and reached is not None and state.global_step >= reached
            value = self.peak.reached_norm if best else None
        else:
            value = self._value(state)
            best = self._improves(value)
        if best:
            self._claims[name] = (self.best_value, self.best_step, self.best_name)
            self.best_value, self.best_step, self.best_name = value, state.global_step, name
        self.last_saved_step = state.global_step
        job = Job(name=name, best=best)
        job = self.snapshot(state, job) if parts is None else self.snapshot(state, job, parts)
        self._collect(self.writer.submit(job), state)

    def _collect(self, outcomes: list[Outcome], state: TrainState, at_end: bool = False) -> None:
        for outcome in outcomes:
            claim = self._claims.pop(outcome.job.name, None)
            if outcome.error is None:
                continue
            if claim is not None and self.best_name == outcome.job.name:
                self.best_value, self.best_step, self.best_name = claim  # never written
            message = str(outcome.error)
            self.failures.append(message)
            if self.on_save_error == "continue":
                self.warn(message + ("" if at_end else "; training continues"))
            elif not at_end and self.ranks is None:  # the trainer reports it after the stop
                state.stop(STOP_REASON)
            elif not at_end:  # DDP: every rank stops at the next gather or epoch end, alike
                self._failed = True

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "best_name": self.best_name,
            "measured": dict(self.measured),
            "last_saved_step": self.last_saved_step,
            "peak": self.peak.state_dict() if self.peak is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_step = state.get("best_step")
        self.best_name = state.get("best_name")
        self.measured = dict(state.get("measured", {}))
        self.last_saved_step = state.get("last_saved_step")
        if self.peak is not None and state.get("peak"):
            self.peak.load_state_dict(state["peak"])
