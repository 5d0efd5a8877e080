"""A live progress bar for a terminal (rich); shown only when output is a terminal.

It is redrawn by rich's own thread a few times a second; the loop only hands it the step count,
and at most every ``interval`` seconds, so the bar costs the loop next to nothing.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gradstep.callbacks.base import Callback
from gradstep.state import TrainState


class ProgressBar(Callback):
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            refresh_per_second=4,
        )
        self.task = None
        self.interval = 0.2
        self._last = 0.0

    def on_fit_start(self, state: TrainState) -> None:
        self.progress.start()

    def on_epoch_start(self, state: TrainState) -> None:
        self._last = time.monotonic()
        self.task = self.progress.add_task(
            "train", total=state.steps_per_epoch, epoch=f"{state.epoch}/{state.epochs}"
        )

    def on_step_end(self, state: TrainState) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self.progress.update(self.task, completed=state.step_in_epoch)
            self._last = now

    def on_epoch_end(self, state: TrainState) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def on_fit_end(self, state: TrainState) -> None:
        self.progress.stop()

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        self.progress.stop()
