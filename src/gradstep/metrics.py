"""Loss and accuracy (or MAE) accumulated on the device, read with one host sync on demand.

The loop calls :meth:`Meter.update` once per micro-batch, and that call launches no tensor
operation at all: it only keeps references to the batch's loss, output and target. Every
``CHUNK`` micro-batches (or sooner, if the kept outputs grow large) the chunk is reduced on the
device in a handful of batched operations — argmax, compare, sum — into running sums, still
without a host sync. Values are read (one ``.tolist()``) only when a progress line is due
(:meth:`Meter.window_loss`) and at the end of an epoch or a validation pass
(:meth:`Meter.compute`).

Why so careful: for small models a training step is a few dozen tiny kernels, each costing
tens of microseconds of dispatch on a CPU; one extra ``argmax`` per step is several percent.

Means are weighted by each micro-batch's sample count, so a smaller last batch counts for what
it holds. The losses kept are the unscaled per-micro-batch means (not the accumulation-weighted
ones), so the logged loss is the true mean over the samples seen.
"""

from __future__ import annotations

from typing import Any

import torch

from gradstep import dist

CHUNK = 256  # micro-batches kept before a reduction (also reduced at each log line)
MAX_KEPT = 1 << 22  # output elements kept before a reduction (bounds the memory held)


class Meter:
    """Running loss and a task metric (``acc`` or ``mae``) over micro-batches."""

    def __init__(self, task: str, device: torch.device | str | None = None) -> None:
        self.task = task
        # where a rank's empty sums live for a distributed reduce (nccl needs CUDA tensors)
        self.device = torch.device(device) if device is not None else dist.collective_device()
        self.samples = 0
        self._losses: list[torch.Tensor] = []
        self._outs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._sizes: list[int] = []
        self._kept = 0
        self._total: torch.Tensor | None = None  # [loss * n, metric sum, metric count]
        self._window: torch.Tensor | None = None  # [loss * n] since the last window read
        self._window_n = 0

    def update(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        """Record one micro-batch (no tensor operation, no sync)."""
        self._losses.append(loss)
        self._outs.append(out)
        self._targets.append(y)
        n = len(y)
        self._sizes.append(n)
        self.samples += n
        self._window_n += n
        self._kept += out.numel()
        if len(self._sizes) >= CHUNK or self._kept >= MAX_KEPT:
            self._reduce()

    @torch.no_grad()
    def _reduce(self) -> None:
        if not self._sizes:
            return
        sizes = self._sizes
        losses = torch.stack(self._losses).detach().double()
        if all(s == sizes[0] for s in sizes):
            loss_sum = losses.sum() * sizes[0]
        else:  # rare: the chunk holding a smaller last batch
            loss_sum = sum(loss * s for loss, s in zip(losses, sizes, strict=True))
        out = torch.cat(self._outs).detach()
        target = torch.cat(self._targets)
        if self.task == "multiclass":
            metric = (out.argmax(1) == target).sum().double()
            count = float(len(target))
        elif self.task == "binary":
            metric = ((out > 0) == (target.reshape(out.shape) > 0.5)).sum().double()
            count = float(out.numel())
        else:
            metric = (out.double() - target.reshape(out.shape)).abs().sum()
            count = float(out.numel())
        chunk = torch.stack([loss_sum, metric, torch.full_like(metric, count)])
        self._total = chunk if self._total is None else self._total + chunk
        self._window = chunk[0] if self._window is None else self._window + chunk[0]
        self._losses, self._outs, self._targets, self._sizes = [], [], [], []
        self._kept = 0

    def window_loss(self) -> float:
        """Mean loss of the micro-batches since the last call (one host sync). Distributed:
        over every rank's micro-batches (every rank calls it at the same step)."""
        self._reduce()
        if dist.distributed():
            window = self._window if self._window is not None else self._zero()
            both = torch.stack([window.double(), window.new_tensor(float(self._window_n))])
            loss_sum, n = dist.all_reduce_sum(both).tolist()  # sync: read at log_every only
        elif self._window is None or self._window_n == 0:
            return float("nan")
        else:
            loss_sum, n = self._window.item(), self._window_n  # sync: read at log_every only
        self._window, self._window_n = None, 0
        return loss_sum / n if n else float("nan")

    def compute(self) -> dict[str, float]:
        """``{"loss": ..., "acc" | "mae": ...}`` over everything seen (one host sync).
        Distributed: the sums and counts of every rank (each calls it at the same point)."""
        self._reduce()
        if dist.distributed():
            total = self._total if self._total is not None else self._zero().repeat(3)
            sums = torch.cat([total, total.new_tensor([float(self.samples)])])
            loss_sum, metric, count, samples = dist.all_reduce_sum(sums).tolist()  # the sync
        elif self._total is None:
            return {}
        else:
            loss_sum, metric, count = self._total.tolist()  # the one sync
            samples = self.samples
        if not samples:
            return {}
        name = "mae" if self.task == "regression" else "acc"
        return {"loss": loss_sum / samples, name: metric / count}

    def _zero(self) -> torch.Tensor:
        """A zero on the device this rank's sums would be on (a rank that saw no sample)."""
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def state_dict(self) -> dict[str, Any]:
        """The running sums as floats (reduces what is pending: one host sync), for a checkpoint
        taken mid-epoch, so a resumed epoch reports the same train metrics."""
        self._reduce()
        return {
            "samples": self.samples,
            "total": None if self._total is None else self._total.tolist(),
            "window": None if self._window is None else self._window.item(),
            "window_n": self._window_n,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        kw = {"dtype": torch.float64, "device": device}
        self.samples = state["samples"]
        self._total = None if state["total"] is None else torch.tensor(state["total"], **kw)
        self._window = None if state["window"] is None else torch.tensor(state["window"], **kw)
        self._window_n = state["window_n"]


def resolve_monitor(
    where: str, monitor: str | None, mode: str, task: str, has_val: bool, extra: tuple = ()
) -> tuple[str, str]:
    """Check that ``monitor`` is a metric the run logs (``train_loss``, ``val_acc``, ... and
    ``extra``); resolve ``mode = "auto"`` (max for accuracies, min otherwise). ``where`` names
    the config key in the error (``"[early_stop] monitor"``). Default monitor: ``val_loss``, or
    ``train_loss`` without validation."""
    from gradstep.errors import UserError, did_you_mean

    metric = "mae" if task == "regression" else "acc"
    prefixes = ("train", "val") if has_val else ("train",)
    known = [f"{p}_{m}" for p in prefixes for m in ("loss", metric)] + list(extra)
    if monitor is None:
        monitor = "val_loss" if has_val else "train_loss"
    if monitor not in known:
        hint = "" if has_val or not monitor.startswith("val_") else " (this run has no validation)"
        raise UserError(
            f"{where} = {monitor!r}: not a metric this run logs{hint}"
            f"{did_you_mean(monitor, known)}; it logs {', '.join(known)}"
        )
    if mode == "auto":
        mode = "max" if monitor.endswith("_acc") else "min"
    return monitor, mode
