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
import gc
import os
import re
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
    kwargs: dict[str, Any] = {"device_id": device} if name == "nccl" else {}
    try:
        kwargs.update(_attempt_store(timeout))
        torch.distributed.init_process_group(backend=name, timeout=timeout, **kwargs)
        import atexit

        global _joined, _flags_group
        _joined = True
        if name == "nccl":  # the stop flags on the CPU: reading one never waits for the GPU
            _flags_group = torch.distributed.new_group(backend="gloo")
        # an orderly exit, not the group's destructor at interpreter shutdown; no barrier: a
        # process that gets here still joined is leaving on an error, its peers mid-collective
        atexit.register(shutdown, wait=False)
    except (RuntimeError, ValueError) as err:  # a busy port, a rendezvous that timed out
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise UserError(
            f"rank {rank()}: cannot join the process group at {where} ({name}): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    return device


def _attempt_store(timeout: datetime.timedelta) -> dict[str, Any]:
    """Under torchrun's agent, the store it hosts, with keys of this attempt only.

    After an elastic restart the new workers meet in the agent's store; measured here (torch
    2.13, gloo, 2 processes on 2 busy cores), one restart in a few read the addresses the dead
    attempt's workers had published and failed with "connection refused". Prefixing every key
    with the restart count (``TORCHELASTIC_RESTART_COUNT``) keeps each attempt's to itself.
    Only with one agent (one node): agents count restarts each for itself."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    if os.environ.get("GROUP_WORLD_SIZE", "1") != "1":  # several agents (nodes): each counts
        return {}  # its own restarts, so the count is no key they share; torch's store as is
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = torch.distributed.TCPStore(host, port, world_size(), False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = torch.distributed.PrefixStore(f"gradstep/attempt-{attempt}", store)
    return {"store": prefixed, "rank": rank(), "world_size": world_size()}


_flags_group: Any = None  # under nccl, a gloo group for AgreedStop's flags (CPU tensors)
_joined = False  # whether init joined the group (a group the user made is left to them)


def shutdown(wait: bool = True) -> None:
    """Leave the group :func:`init` joined, after the fit's last collective: a barrier (on the
    gloo flags group under nccl), so that no rank tears its connections down while another
    still uses them, then ``destroy_process_group`` (every group: the flags' too). Without the
    barrier a rank that finished first (one with an empty last share) aborted now and then
    while leaving ("terminate called without an active exception": 2 of 3 full test runs on
    one day). The barrier waits at most ``[dist] timeout_s``, like any collective; what held
    the group (a DDP wrapper's reducer, in a reference cycle) is collected first, not in the
    interpreter's teardown. ``wait=False`` skips the barrier: for a rank whose fit failed,
    while the others may still wait in a collective of the step it never finished (a barrier
    there would wait with them until ``timeout_s``). A process that exits without leaving may
    abort as gloo's threads are torn down with the interpreter, and the agent then kills the
    others: so this is also registered ``atexit``."""
    global _joined, _flags_group
    if _joined and torch.distributed.is_initialized():
        group = _flags_group  # None: the default group, gloo
        _joined, _flags_group = False, None
        gc.collect()
        if wait:
            with contextlib.suppress(RuntimeError):  # a peer already gone: leave anyway
                torch.distributed.barrier(group=group)
        with contextlib.suppress(RuntimeError):
            torch.distributed.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, *, sync_buffers: bool = True) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed (else ``model`` itself).

    Parameters are broadcast from rank 0 at construction, so every rank starts from the same
    weights. ``sync_buffers`` (DDP's default): rank 0's buffers — a plain BatchNorm's running
    statistics — are broadcast before each forward, so every rank holds rank 0's, validates
    with them, and the checkpoint (rank 0's) is every rank's. With SyncBatchNorm the ranks'
    statistics are equal already, and the broadcast is skipped (``sync_buffers=False``).
    """
    if not distributed():
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    if sync_buffers:
        return DistributedDataParallel(model, device_ids=ids)
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers to every rank, when DDP broadcasts them (a plain BatchNorm's running
    statistics: each rank updated its own since the last training forward). Before a
    validation, so every shard is normalised as rank 0's checkpoint would normalise it."""
    from torch.nn.parallel import DistributedDataParallel

    syncs = getattr(model, "forward_sync_buffers", getattr(model, "broadcast_buffers", False))
    if isinstance(model, DistributedDataParallel) and syncs:
        for buffer in model.module.buffers():
            if buffer.numel():
                torch.distributed.broadcast(buffer.data, src=0)


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


_TRANSPORT = re.compile(r"gloo|nccl|timed out|connection (closed|reset|refused)", re.IGNORECASE)


def collective_failure(err: BaseException) -> str | None:
    """One line for a collective that failed under DDP — it waited past ``[dist] timeout_s``,
    or another rank died mid-way — naming this rank and what the backend said (without its
    source location); None for any other error (a user's own, which keeps its traceback)."""
    if not distributed() or not isinstance(err, RuntimeError):
        return None
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    dist_error = getattr(torch.distributed, "DistError", ())
    if not (isinstance(err, dist_error) or _TRANSPORT.search(text)):
        return None
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's "[.../pair.cc:553] "
    text = text.split(". This is typically")[0]
    return (
        f"rank {rank()}: a collective with the other ranks failed: {text}; "
        "if another rank died, its own error is the cause"
    )


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    """``t`` reduced to its minimum over the ranks, in place (e.g. "finite on every rank")."""
    if distributed():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return t


def same_everywhere(value: int, what: str) -> None:
    """Refuse a run whose ranks disagree on ``value`` (e.g. the step of the checkpoint each
    rank found to resume from: a run directory that is not on storage every node shares)."""
    if not distributed():
        return
    t = torch.tensor([value, -value], dtype=torch.int64, device=collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    high, low = t[0].item(), -t[1].item()
    if high != low:
        raise UserError(
            f"rank {rank()}: the ranks disagree on {what} ({low} on one, {high} on another): "
            "is the run directory on storage every node shares?"
        )


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
    if t.on_oom == "fallback":  # a rank alone would split its micro-batches: the ranks part
        raise UserError(
            '[train] on_oom = "fallback" works in one process only; under DDP every rank '
            "must run the same micro-batches (lower batch_size instead)"
        )
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
    """The ranks' common answer to "should training stop now?".

    A signal (SIGINT / SIGTERM) reaches each rank at its own moment; ranks that stopped at
    different steps would wait forever in each other's collectives. So under DDP:

    * :meth:`step`, at each step's end: this rank's signal flag goes into an all-reduce that
      runs in the background (``async_op``), and the one started a step earlier — long done —
      is read. Every rank reads the same flags at the same step, so all stop after the same
      one: one step after the signal, at no wait (a blocking all-reduce a step, measured in
      ``bench/ddp.py``, cost the 2-process MNIST simplenet a tenth of its step time).
    * :meth:`check`, at each epoch's end (once an epoch): blocking, it also takes any stop one
      rank decided alone (``state.should_stop``) to every rank, with its reason when it is one
      of :data:`SHARED_REASONS`, else ``"stopped on another rank"``.

    Stops every rank decides alike (``max_steps``, a non-finite gradient, early stopping, a
    failed checkpoint write: rank 0 says so in the checkpoint's gather) need no agreement.
    ``requested`` is the agreed answer for a signal; ``signum`` the signal this rank received
    (None on a rank that got none).
    """

    def __init__(self, local: object) -> None:
        self.local = local
        self.requested = False
        self._pending: tuple[Any, torch.Tensor] | None = None  # (work, flags) of the last step

    @property
    def signum(self) -> int | None:
        return getattr(self.local, "signum", None)

    def _mine(self, stop: int = 0) -> torch.Tensor:
        signal = 1 if self.requested or getattr(self.local, "requested", False) else 0
        device = "cpu" if _flags_group is not None else collective_device()
        return torch.tensor([signal, stop], device=device)

    def _read_pending(self) -> None:
        if self._pending is not None:
            work, flags = self._pending
            self._pending = None
            work.wait()
            self.requested = self.requested or bool(flags[0].item())

    def settle(self) -> None:
        """Wait for the flags of the last step, if still in flight (a fit that ended mid-epoch):
        no work is left pending when the group is destroyed."""
        with contextlib.suppress(RuntimeError):  # a peer already gone: nothing left to agree
            self._read_pending()

    def step(self) -> bool:
        """At a step's end: whether every rank stops here (for a signal)."""
        self._read_pending()
        if not self.requested:
            flags = self._mine()
            if distributed():
                op = torch.distributed.ReduceOp.MAX
                work = torch.distributed.all_reduce(flags, op=op, group=_flags_group, async_op=True)
                self._pending = (work, flags)
            elif flags[0].item():
                self.requested = True
        return self.requested

    def check(self, state: Any = None) -> bool:
        """At an epoch's end (blocking): a signal, or a stop any rank decided."""
        self._read_pending()
        stop = 0
        if state is not None and state.should_stop:
            reason = state.stop_reason
            stop = SHARED_REASONS.index(reason) + 2 if reason in SHARED_REASONS else 1
        flags = self._mine(stop)
        if distributed():
            op = torch.distributed.ReduceOp.MAX
            torch.distributed.all_reduce(flags, op=op, group=_flags_group)
        signal, stop = flags.tolist()  # a host sync: two integers
        self.requested = bool(signal)
        if stop and state is not None and not state.should_stop:
            state.stop(SHARED_REASONS[stop - 2] if stop >= 2 else "stopped on another rank")
        return self.requested or bool(stop)


SHARED_REASONS = ("checkpoint save failed",)
"""Stop reasons one rank alone can decide, passed on as they are (the checkpoint callback's)."""
