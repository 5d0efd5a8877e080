"""The run's progress counters: epoch, batch, step, samples — and whether to stop.

One :class:`TrainState` is shared by the loop and every callback. The loop owns the counters;
a callback stops training by calling :meth:`TrainState.stop` (never by raising). The counters
round-trip through :meth:`state_dict` / :meth:`load_state_dict`; the runtime references
(model, optimizer, meters, the preprocessing record) do not.

``state.model`` is the network being trained: it takes *prepared* input — what the batches
hold, after training's preprocessing (integer pixels / 255, the sample shape, the training
split's mean/std). For raw input, as the data source gives it, use
:meth:`TrainState.preprocess` first: ``state.model(state.preprocess(x_raw))`` is what
``gradstep predict`` and ``gs.load_model(ckpt)(x_raw)`` compute (in eval mode).

Counting (DESIGN.md's vocabulary): ``epoch`` is 1-based (the epoch under way or just finished);
``batch`` counts micro-batches done in this epoch; ``global_step`` counts optimizer steps since
the run began; ``steps_per_epoch = ceil(batches_per_epoch / accumulate)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_SAVED = (
    "epoch",
    "batch",
    "step_in_epoch",
    "global_step",
    "samples_seen",
    "epochs_completed",
    "in_epoch",
    "should_stop",
    "stop_reason",
    "micro_split",
    "oom_events",
)


@dataclass
class TrainState:
    epochs: int
    batches_per_epoch: int
    accumulate: int = 1
    max_steps: int | None = None
    epoch: int = 0
    batch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0
    epochs_completed: int = 0
    in_epoch: bool = False
    """True from an epoch's first step until its end-of-epoch record: a checkpoint taken then
    resumes inside the epoch, after its ``batch`` micro-batches."""
    should_stop: bool = False
    stop_reason: str | None = None
    # runtime only (not in state_dict)
    model: Any = field(default=None, repr=False)
    """The network being trained (the loop's module): it takes prepared input — see
    :meth:`preprocess` for raw input."""
    model_info: dict[str, Any] | None = field(default=None, repr=False)
    """What the run's checkpoints record in ``model.json`` (the model's name and args, the
    task, the training sample shape and normalisation): the preprocessing :meth:`preprocess`
    applies. Set by ``trainer.fit`` before the first callback runs."""
    optimizer: Any = field(default=None, repr=False)
    train_meter: Any = field(default=None, repr=False)
    train_metrics: dict[str, float] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    epoch_time_s: float = 0.0
    log_values: dict[str, float] = field(default_factory=dict)
    """Extra values for the next step line (``grad_norm``, ...), filled by callbacks that run
    before the logger; the logger empties it."""
    last_log: dict[str, Any] | None = None
    """The latest step line's record (the logger sets it)."""
    micro_split: int = 1
    """Each micro-batch runs as this many pieces (``on_oom = "fallback"`` doubles it)."""
    oom_events: list[dict[str, int]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.batches_per_epoch // self.accumulate)

    @property
    def total_steps(self) -> int:
        total = self.epochs * self.steps_per_epoch
        return min(total, self.max_steps) if self.max_steps is not None else total

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    def preprocess(self, x: Any) -> torch.Tensor:
        """Raw input ``x`` (a tensor or array as the data source gives it: a CSV's feature
        columns, uint8 images) prepared as training prepares its batches — exactly
        :func:`gradstep.inference.prepare_input` with :attr:`model_info`, the preparation of
        ``gradstep predict`` and ``gs.load_model`` — on :attr:`model`'s device.

        Example::

            class Probe(gs.Callback):
                def on_epoch_end(self, state):
                    with torch.no_grad():
                        self.outputs = state.model(state.preprocess(x_raw))
        """
        if self.model_info is None:
            raise RuntimeError("state.preprocess: the run's preprocessing is set by trainer.fit")
        from gradstep.predictor import prepare_for

        return prepare_for(self.model, x, self.model_info)

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step; the first reason given is kept."""
        if not self.should_stop:
            self.should_stop, self.stop_reason = True, reason

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _SAVED}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for k in _SAVED:
            if k in state and k in names:
                setattr(self, k, state[k])
