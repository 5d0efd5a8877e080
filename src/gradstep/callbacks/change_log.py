"""Carry a run's resume changes in its checkpoints, so every later resume keeps the list.

A resume that changes settings (``gradstep resume RUN --set optim.lr=0.01``: see
:mod:`gradstep.checkpoint.changes`) records each as ``{"step", "key", "from", "to"}``. This
callback holds the list — the changes of earlier resumes, read from the checkpoint and checked
before anything was written, then this resume's — and is saved with every checkpoint (its
``state_dict``); ``summary.json`` shows it as ``changes``. A resume that falls back to a
checkpoint older than a change forgets that change, as it forgets the steps after it.

Example::

    ChangeLog([{"step": 30, "key": "optim.lr", "from": 0.1, "to": 0.01}])
"""

from __future__ import annotations

from typing import Any

from gradstep.callbacks.base import Callback


class ChangeLog(Callback):
    """Args: ``changes``, the full list (earlier resumes' first)."""

    def __init__(self, changes: list[dict[str, Any]]) -> None:
        self.changes = list(changes)

    def state_dict(self) -> dict[str, Any]:
        return {"changes": list(self.changes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing: the trainer built this with the checkpoint's list already in it."""
