"""A live progress bar for a terminal (rich); shown only when output is a terminal.

It is refreshed by rich's own thread; the loop only advances a counter, and only every
``stride`` steps (about 100 updates an epoch), so the bar costs the loop next to nothing.
"""

from __future__ import annotations

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
        )
        self.task = None
        self.stride = 1
        self._last = 0

    def on_fit_start(self, state: TrainState) -> None:
        self.progress.start()

    def on_epoch_start(self, state: TrainState) -> None:
        self.stride = max(1, state.steps_per_epoch // 100)
        self._last = 0
        self.task = self.progress.add_task(
            "train", total=state.steps_per_epoch, epoch=f"{state.epoch}/{state.epochs}"
        )

    def on_step_end(self, state: TrainState) -> None:
        if state.step_in_epoch - self._last >= self.stride:
            self.progress.update(self.task, completed=state.step_in_epoch)
            self._last = state.step_in_epoch

    def on_epoch_end(self, state: TrainState) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def on_fit_end(self, state: TrainState) -> None:
        self.progress.stop()

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        self.progress.stop()
