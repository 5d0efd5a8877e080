"""Who am I in a torchrun job, and the few collectives gradstep uses.

torchrun's contract (``torchrun --nproc-per-node N -m gradstep fit CONFIG``): its elastic agent
starts ``WORLD_SIZE`` processes and sets ``RANK`` (global), ``LOCAL_RANK`` (on this node),
``MASTER_ADDR`` / ``MASTER_PORT`` (the store every process meets at) in each one's
environment. Rank 0 is the main process: everything that writes a file or prints goes through
:func:`is_main_process`.

What distributed training is made of, and where it lives:

* :func:`init` joins the process group (``nccl`` on CUDA, one device per ``LOCAL_RANK``;
  ``gloo`` on the CPU) with a timeout, so a collective that waits longer raises instead of
  hanging; :func:`shutdown` leaves it.
* :func:`wrap` puts the model in ``DistributedDataParallel`` (its gradient all-reduce,
  bucketed and overlapped with backward, is PyTorch's own); :func:`no_sync` is the context
  the loop enters for every micro-batch of a step but the last, so a step all-reduces once.
* :func:`all_reduce_sum` sums the metric totals (:class:`~gradstep.metrics.Meter`) when they
  are read: at a log line and an epoch's end, never per step.
* The sharding rule (which samples each rank sees) is in :mod:`gradstep.data.sampler`.

Not distributed (``WORLD_SIZE`` unset or 1), every function here is a no-op and the loop runs
the plain model: one process pays nothing.

Example (what :class:`~gradstep.trainer.Trainer` does)::

    device = dist.init("auto", timeout_s=1800, device=device)
    model = dist.wrap(model, device)
    ...
    dist.shutdown()
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from gradstep.errors import UserError

TIMEOUT_S = 1800.0
"""How long a collective may wait for the other ranks before it fails (seconds)."""


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its node (its CUDA device index)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the one process that writes files and prints progress."""
    return rank() == 0


def distributed() -> bool:
    """True when this process has joined a process group of more than one process."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def init(backend: str, *, timeout_s: float, device: torch.device) -> torch.device:
    """Join the process group torchrun's environment describes (nothing when ``WORLD_SIZE`` is
    1); return the device this rank trains on (``cuda:LOCAL_RANK`` for a CUDA run).

    ``backend``: ``"auto"`` (nccl for CUDA, gloo otherwise), ``"gloo"`` or ``"nccl"``.
    """
    if world_size() <= 1 or distributed():
        return device
    if not torch.distributed.is_available():
        raise UserError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    name = ("nccl" if device.type == "cuda" else "gloo") if backend == "auto" else backend
    if name == "nccl" and device.type != "cuda":
        raise UserError(f"[dist] backend = 'nccl' needs CUDA devices; this run is on {device}")
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs = {"device_id": device} if name == "nccl" else {}
    try:
        torch.distributed.init_process_group(backend=name, timeout=timeout, **kwargs)
    except (RuntimeError, ValueError) as err:  # a busy port, a rendezvous that timed out
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise UserError(
            f"rank {rank()}: cannot join the process group at {where} ({name}): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    return device


def shutdown() -> None:
    """Leave the process group (after a last barrier, so no rank leaves while others write)."""
    if distributed():
        with contextlib.suppress(RuntimeError):
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed (else ``model`` itself).

    Parameters are broadcast from rank 0 at construction, so every rank starts from the same
    weights. ``broadcast_buffers=False``: a BatchNorm's running statistics are each rank's own
    (SyncBatchNorm keeps them equal), not overwritten by rank 0's before every forward.
    """
    if not distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    import inspect

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` wraps (``model`` itself otherwise)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """No gradient all-reduce in this backward (a micro-batch that is not its step's last)."""
    sync_off = getattr(model, "no_sync", None)
    if sync_off is None or not distributed():
        yield
        return
    with sync_off():
        yield


def collective_device() -> torch.device:
    """Where a tensor must be for this process group's collectives: this rank's CUDA device
    under nccl (which reduces no CPU tensor), the CPU otherwise."""
    if distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, in place (``t`` itself when not distributed)."""
    if distributed():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def prepare_batchnorm(
    cfg: Any, net: nn.Module, device: torch.device, warn: Callable[[str], None]
) -> None:
    """``[train] sync_batchnorm``: every BatchNorm synced across the ranks, in place (see
    :mod:`gradstep.syncbn`); without it, one warning that each rank normalises its own."""
    from gradstep import syncbn

    if not syncbn.has_batchnorm(net):
        return
    if cfg.train.sync_batchnorm:
        syncbn.convert(net, device)
        return
    warn(
        f"the model has BatchNorm and {world_size()} processes: each normalises its "
        "own micro-batch (set [train] sync_batchnorm = true for statistics over the "
        "global one)"
    )


def accumulate_per_world(cfg: Any, world: int) -> None:
    """``effective_batch`` is the invariant: under ``world`` processes ``accumulate`` is
    ``effective_batch / (batch_size × world)``, so one config trains the same model on 1, 2
    or 4 processes. Without it, each step sees ``batch_size × accumulate × world``."""
    t = cfg.train
    if t.effective_batch is None:
        return
    assert isinstance(t.batch_size, int)  # the config refuses effective_batch with "full"
    per_step = t.batch_size * world
    if t.effective_batch % per_step:
        raise UserError(
            f"[train] effective_batch = {t.effective_batch} is not a multiple of "
            f"batch_size × processes = {t.batch_size} × {world} = {per_step}"
        )
    t.accumulate = t.effective_batch // per_step


class AgreedStop:
    """The ranks' common answer to "was a stop signal received?" (any rank's SIGINT / SIGTERM).

    A signal reaches each rank at its own moment; ranks that stopped at different steps would
    wait forever in each other's all-reduce. So under DDP the loop asks :meth:`check` once per
    step, at the step's end — one all-reduce of one integer, beside the step's gradient
    all-reduce — and every rank stops after the same step. ``requested`` is that agreed answer;
    ``signum`` the signal this rank received (None on a rank that got none).
    """

    def __init__(self, local: object) -> None:
        self.local = local
        self.requested = False

    @property
    def signum(self) -> int | None:
        return getattr(self.local, "signum", None)

    def check(self) -> bool:
        if not self.requested:
            local = 1 if getattr(self.local, "requested", False) else 0
            flag = torch.tensor([local], device=collective_device())
            if distributed():
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.requested = bool(flag.item())  # a host sync: one integer per step
        return self.requested
