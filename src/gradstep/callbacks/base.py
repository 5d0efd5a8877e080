"""Callbacks: the hooks features hang off, so the loop itself stays the classic loop.

Hooks (each takes the shared :class:`~gradstep.state.TrainState`): ``on_fit_start``,
``on_epoch_start``, ``on_step_end`` (after each optimizer step), ``on_validation_end``,
``on_epoch_end``, ``on_fit_end`` and ``on_exception(state, exc)``. A callback with state
implements ``state_dict`` / ``load_state_dict``. A callback stops training with
``state.stop("reason")``, never by raising. In ``on_epoch_end`` a callback may add values to
the epoch's record, ``state.history[-1]``; records of earlier epochs are final (checkpoints
encode each of them once).

Example::

    class StopAtLoss(Callback):
        def on_epoch_end(self, state):
            if state.train_metrics["loss"] < 0.1:
                state.stop("loss below 0.1")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gradstep.state import TrainState

HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_step_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
)


class Callback:
    """Base class: override the hooks you need; the rest cost nothing."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_validation_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...
    def on_exception(self, state: TrainState, exc: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class CallbackList:
    """Calls each hook on every callback that overrides it, in order.

    Only overriding callbacks are called, so a hook nobody implements (often ``on_step_end``)
    adds no per-step cost to the loop.
    """

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)
        self._hooks: dict[str, list[Callable[..., None]]] = {
            name: [
                getattr(cb, name)
                for cb in self.callbacks
                if getattr(type(cb), name, None) is not getattr(Callback, name)
            ]
            for name in (*HOOKS, "on_exception")
        }
        self.listens_to_steps = bool(self._hooks["on_step_end"])

    def _call(self, name: str, state: TrainState) -> None:
        for fn in self._hooks[name]:
            fn(state)

    def on_fit_start(self, state: TrainState) -> None:
        self._call("on_fit_start", state)

    def on_epoch_start(self, state: TrainState) -> None:
        self._call("on_epoch_start", state)

    def on_step_end(self, state: TrainState) -> None:
        for fn in self._hooks["on_step_end"]:
            fn(state)

    def on_validation_end(self, state: TrainState) -> None:
        self._call("on_validation_end", state)

    def on_epoch_end(self, state: TrainState) -> None:
        self._call("on_epoch_end", state)

    def on_fit_end(self, state: TrainState) -> None:
        self._call("on_fit_end", state)

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        """Every callback's hook runs, even after one of them raised (the checkpoint writer
        must be closed whatever a logger did); the first such error is raised at the end."""
        first: BaseException | None = None
        for fn in self._hooks["on_exception"]:
            try:
                fn(state, exc)
            except Exception as err:
                first = first or err
        if first is not None:
            raise first
