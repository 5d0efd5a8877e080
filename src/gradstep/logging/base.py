"""A logging sink: where metric records go. Adding one (TensorBoard, CSV, ...) is one small file.

A sink gets every record the :class:`~gradstep.callbacks.MetricsLogger` makes (see its docstring
for the record kinds). Example, a sink that keeps the epoch records in memory::

    class EpochList(Sink):
        def __init__(self):
            self.epochs = []

        def write(self, record):
            if record["kind"] == "epoch":
                self.epochs.append(record)
"""

from __future__ import annotations

from typing import Any


class Sink:
    """Base class. ``open`` is called once at fit start, ``close`` at the end (or on an error)."""

    def open(self, state: Any) -> None:
        return None

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None
