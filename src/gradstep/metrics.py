"""Loss and accuracy (or MAE) accumulated on the device, read with one host sync on demand.

The loop calls :meth:`Meter.update` once per micro-batch. It only keeps references: the detached
loss and the batch's predictions (``argmax`` for classes), each still on the device, so a step
costs no host-device sync. Values are read — one ``.tolist()`` each time — when a progress line
is due (:meth:`Meter.window_loss`) and at the end of an epoch or a validation pass
(:meth:`Meter.compute`). Means are weighted by each micro-batch's sample count, so a smaller last
batch counts for what it holds.
"""

from __future__ import annotations

import torch


class Meter:
    """Running loss and a task metric over the micro-batches of one epoch or one validation."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self._window = 0

    @property
    def samples(self) -> int:
        return sum(self.sizes)

    def update(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        self.sizes.append(len(y))
        out = out.detach()
        if self.task == "multiclass":
            self.preds.append(out.argmax(1))
        elif self.task == "binary":
            self.preds.append(out > 0)
        else:
            self.preds.append(out)
        self.targets.append(y)

    def _mean_loss(self, start: int) -> torch.Tensor:
        sizes = self.sizes[start:]
        losses = torch.stack(self.losses[start:]).double()
        if all(s == sizes[0] for s in sizes):
            return losses.mean()
        weights = torch.tensor(sizes, dtype=torch.float64, device=losses.device)
        return (losses * weights).sum() / weights.sum()

    def window_loss(self) -> float:
        """Mean loss of the micro-batches since the last call (one host sync)."""
        start, self._window = self._window, len(self.losses)
        if start == len(self.losses):
            return float("nan")
        return self._mean_loss(start).item()  # sync: read at log_every only

    def compute(self) -> dict[str, float]:
        """``{"loss": ..., "acc" | "mae": ...}`` over everything seen (one host sync)."""
        if not self.losses:
            return {}
        loss = self._mean_loss(0)
        pred, target = torch.cat(self.preds), torch.cat(self.targets)
        if self.task == "multiclass":
            name, value = "acc", (pred == target).double().mean()
        elif self.task == "binary":
            name, value = "acc", (pred == (target.reshape(pred.shape) > 0.5)).double().mean()
        else:
            name, value = "mae", (pred.double() - target.reshape(pred.shape)).abs().mean()
        loss_v, metric_v = torch.stack([loss, value.to(loss.device)]).tolist()  # the one sync
        return {"loss": loss_v, name: metric_v}
