"""The training loop: the classic hand-written loop, once, done right.

In pseudocode, what :func:`fit_loop` does::

    for epoch in 1..epochs:
        model.train()
        for group of `accumulate` micro-batches (x, y):        # one optimizer step
            for x, y in group:                                      # forward_backward
                out = model(x); loss = loss_fn(out, y)
                (loss * samples_in_batch / samples_in_group).backward()
            grad norm, clipping, non-finite check                 # GradMonitor.before_step
            optimizer.step(); optimizer.zero_grad()
            validate if val_every steps are due
            on_step_end                                           # logging, checkpoints, ...
            a signal arrived (SIGINT / SIGTERM)? leave the epoch open and stop
        train metrics; validate (model.eval(), inference_mode); on_epoch_end
        stop when epochs or max_steps are done, or a callback asked to

Who owns what: the loop owns the counters in :class:`~gradstep.state.TrainState` and the
order of operations; everything else (progress lines, files, the bar) hangs off callbacks.

Accumulation: each micro-batch's mean loss is weighted by its share of the group's samples, so a
step's gradient is the gradient of the mean loss over the samples the step really saw — the
epoch's trailing partial group included (it is applied, not dropped, and nothing leaks into the
next epoch). With ``accumulate = 1`` the weight is 1 and no multiply happens.

Interruption: ``p.stop.requested`` (set by :class:`gradstep.interrupt.StopOnSignal`) is read
once per step, after ``on_step_end``: the step is complete and every callback has seen it. A
run stopped mid-epoch leaves the epoch open (``state.in_epoch``: no partial epoch record, no
extra validation), so its final checkpoint is the state at that step boundary, and a resume
continues at the next step exactly as if nothing had happened. Stopped at an epoch's last step,
the epoch is closed as usual. ``stop_reason`` is then ``"interrupted"`` while ``should_stop``
stays False: the run is not finished, and a resume continues it.

Speed: no host-device sync per step. Loss and predictions stay on the device in a
:class:`~gradstep.metrics.Meter` and are read at ``log_every`` and at epoch end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradstep import dist
from gradstep.callbacks.base import CallbackList
from gradstep.interrupt import NeverStop
from gradstep.metrics import Meter
from gradstep.state import TrainState

Batch = tuple[Any, torch.Tensor]
INTERRUPTED = "interrupted"


@dataclass
class LoopParts:
    """Everything the loop touches. ``val_every`` is None for "each epoch", else a step count."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    task: str
    train: Any  # TensorBatches | LoaderBatches
    val: Any | None
    callbacks: CallbackList
    val_every: int | None = None
    grads: Any = None  # a GradMonitor: norm, clipping, non-finite check before each step
    on_oom: str = "fail"
    warn: Callable[[str], None] = print
    stop: Any = NeverStop  # anything with a bool ``requested``: a StopOnSignal
    world: int = 1  # ranks training together (DDP): see forward_backward


def _groups(batches: Iterable[Batch], k: int) -> Iterator[list[Batch]]:
    """Micro-batches in groups of ``k`` (one optimizer step each); the last may be smaller."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


def forward_backward(
    model: nn.Module,
    loss_fn: nn.Module,
    group: list[Batch],
    n: int,
    piece: int | None = None,
    world: int = 1,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The classic lines for one step's micro-batches: forward, loss, backward. Each loss is
    weighted by its share of the ``n`` samples of the step. ``piece`` (after an out-of-memory
    fallback) runs each micro-batch as equal pieces of at most that many samples (a short
    micro-batch is cut into fewer pieces, never into empty ones). Returns
    ``(loss, output, target)`` of each piece, for the train metrics.

    Under DDP (``world`` ranks; ``n`` the samples of the step on all ranks together) every
    backward but the step's last runs in :func:`gradstep.dist.no_sync`, so the step all-reduces
    once; the weights are multiplied by ``world`` since DDP averages the ranks' gradients, so
    the reduced gradient is that of the mean loss over the step's samples. An empty micro-batch
    (this rank's share of the epoch's last block) backpropagates a zero, to take part."""
    done = []
    whole = piece is None and len(group) == 1 and world == 1  # one micro-batch: the step's mean
    pieces = group if piece is None else list(_pieces(group, piece))
    last = len(pieces) - 1
    for i, (x, y) in enumerate(pieces):
        with dist.no_sync(model) if i < last else contextlib.nullcontext():
            out = model(x)
            if len(y) == 0:
                (out.sum() * 0.0).backward()
                continue
            loss = loss_fn(out, y)
            # weight 1 (a share of exactly n / world samples: every full block under DDP) is
            # skipped; multiplying by 1.0 would change nothing but cost an op and its backward
            share = len(y) * world
            (loss if whole or share == n else loss * (share / n)).backward()
        done.append((loss, out, y))
    return done


def _pieces(group: list[Batch], piece: int) -> Iterator[Batch]:
    for x, y in group:
        k = -(-len(y) // piece)
        yield from zip(_split(x, k), y.tensor_split(k), strict=True)


def _split(x: Any, k: int) -> list[Any]:
    """``x`` (a tensor, or a tuple / list / dict of tensors) cut into ``k`` along dim 0."""
    if isinstance(x, torch.Tensor):
        return list(x.tensor_split(k))
    if isinstance(x, tuple | list):
        return [type(x)(parts) for parts in zip(*(_split(v, k) for v in x), strict=True)]
    if isinstance(x, dict):
        keys = list(x)
        cols = [_split(x[key], k) for key in keys]
        return [dict(zip(keys, parts, strict=True)) for parts in zip(*cols, strict=True)]
    raise TypeError(f"cannot split a {type(x).__name__} batch for the out-of-memory fallback")


def _piece(regular: int, split: int) -> int | None:
    """Samples per piece once micro-batches of ``regular`` are cut ``split`` ways."""
    return None if split == 1 else -(-regular // split)


def _retry_smaller(p: LoopParts, state: TrainState, group: list[Batch], n: int) -> list:
    """Out of memory: halve the micro-batch (double the pieces, so the effective batch stays),
    forget the step's partial gradients, and run the same samples again, until they fit."""
    regular = p.train.batch_size  # the configured micro-batch (the full set for batch GD)
    while True:
        p.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if state.micro_split * 2 > regular:
            raise torch.OutOfMemoryError(
                f"out of memory at step {state.global_step + 1} even with micro-batches of "
                f"{_piece(regular, state.micro_split)} samples"
            )
        state.micro_split *= 2
        size = _piece(regular, state.micro_split)
        event = {
            "step": state.global_step + 1,
            "micro_batch": size,
            "accumulate": state.accumulate * state.micro_split,
        }
        state.oom_events.append(event)
        p.warn(
            f"out of memory at step {event['step']}: micro-batch now {size} samples, "
            f"accumulate {event['accumulate']} (the effective batch is unchanged); "
            "retrying the step"
        )
        try:
            return forward_backward(p.model, p.loss_fn, group, n, size, p.world)
        except torch.OutOfMemoryError:
            continue


def _step_samples(batches: Any, first: int, count: int, otherwise: int) -> int:
    """Samples of global micro-batches ``first …`` on all ranks (gradstep's sharding says);
    ``otherwise`` for a user's ``DataLoader``, whose ranks' batches are taken as equal."""
    sizes = [batches.global_size(first + i) for i in range(count)]
    return otherwise if None in sizes else sum(sizes)


def fit_loop(p: LoopParts, state: TrainState) -> None:
    """Train until ``state.epochs`` or ``state.max_steps`` is reached or a callback stops it."""
    state.model, state.optimizer = p.model, p.optimizer
    try:
        p.callbacks.on_fit_start(state)  # inside: a failing start still closes what opened
        while (state.epoch < state.epochs or state.in_epoch) and not state.should_stop:
            if p.stop.requested:  # a signal: nothing more to do than the final save
                break
            train_epoch(p, state)
        more = (state.epoch < state.epochs or state.in_epoch) and not state.should_stop
        if more and p.stop.requested:
            state.stop_reason = INTERRUPTED  # should_stop stays False: a resume continues
        elif not state.should_stop:
            state.stop_reason = "completed"
        p.callbacks.on_fit_end(state)  # inside: a failing final save still closes the writer
    except BaseException as exc:
        state.stop_reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        p.callbacks.on_exception(state, exc)
        raise


def train_epoch(p: LoopParts, state: TrainState) -> None:
    """One epoch, or the rest of one: a state restored from a checkpoint taken mid-epoch
    (``state.in_epoch``) continues after its ``state.batch`` micro-batches, with the epoch's
    running train metrics restored, as if it had never stopped."""
    model, optimizer, loss_fn, callbacks = p.model, p.optimizer, p.loss_fn, p.callbacks
    resumed = state.in_epoch
    if not resumed:
        state.epoch += 1
        state.batch = state.step_in_epoch = 0
        state.train_meter = Meter(p.task)
        state.in_epoch = True
    meter = state.train_meter
    started = time.perf_counter()
    # a checkpoint is taken after the step's validation, so a resumed step has had it
    every = p.val_every
    validated_at = state.global_step if resumed and every and state.global_step % every == 0 else -1
    model.train()
    callbacks.on_epoch_start(state)
    piece = _piece(p.train.batch_size, state.micro_split)

    for group in _groups(p.train.epoch(state.epoch, start=state.batch), state.accumulate):
        n = len(group[0][1]) if len(group) == 1 else sum(len(y) for _, y in group)
        if p.world > 1:  # the step's samples on all ranks: a function of the sharding
            n = _step_samples(p.train, state.batch, len(group), n * p.world)
        try:
            done = forward_backward(model, loss_fn, group, n, piece, p.world)
        except torch.OutOfMemoryError:
            if p.on_oom != "fallback":
                raise
            done = None  # retried below, outside this handler (which holds the failed frames)
        if done is None:
            done = _retry_smaller(p, state, group, n)
            piece = _piece(p.train.batch_size, state.micro_split)
        if p.grads is None or p.grads.before_step(state, done):
            optimizer.step()
            for loss, out, y in done:
                meter.update(loss, out, y)
        optimizer.zero_grad(set_to_none=True)

        state.batch += len(group)
        state.step_in_epoch += 1
        state.global_step += 1
        state.samples_seen += n
        if every is not None and state.global_step % every == 0:
            validate(p, state)
            validated_at = state.global_step
        if state.max_steps is not None and state.global_step >= state.max_steps:
            state.stop("max_steps")
        callbacks.on_step_end(state)  # the step is complete: logging, checkpoints, ...
        # the flag is a Python bool, no syscall; under DDP the ranks agree (dist.AgreedStop)
        if state.should_stop or (p.stop.step() if p.world > 1 else p.stop.requested):
            break

    if p.stop.requested and not state.should_stop:
        if state.step_in_epoch < state.steps_per_epoch:
            return  # interrupted mid-epoch: the epoch stays open for the checkpoint to resume
    state.train_metrics = meter.compute()  # one host sync per epoch
    if p.val is not None and validated_at != state.global_step:
        if every is None or state.should_stop or state.epoch == state.epochs:
            validate(p, state)
    partial = state.step_in_epoch < state.steps_per_epoch
    if not partial:
        state.epochs_completed += 1
    state.in_epoch = False
    state.epoch_time_s = time.perf_counter() - started
    record = {
        "epoch": state.epoch,
        "step": state.global_step,
        **{f"train_{k}": v for k, v in state.train_metrics.items()},
        **{f"val_{k}": v for k, v in state.val_metrics.items()},
        "lr": state.lr,
        "time_s": state.epoch_time_s,
    }
    if partial:
        record["partial"] = True
    state.history.append(record)
    callbacks.on_epoch_end(state)
    if p.world > 1:  # a stop one rank decided at the epoch's end is every rank's
        p.stop.check(state)


def evaluate_batches(
    model: nn.Module, batches: Iterable[Batch], loss_fn: nn.Module, task: str
) -> dict[str, float]:
    """Loss and metric over ``batches`` in eval mode, under ``inference_mode`` (no gradients).

    The model's train/eval mode is restored afterwards, so BatchNorm running statistics and
    dropout behave as training left them.
    """
    was_training = model.training
    model.eval()
    meter = Meter(task)
    try:
        with torch.inference_mode():
            for x, y in batches:
                if len(y) == 0:  # this rank's share of a sharded last block is empty
                    continue
                out = model(x)
                meter.update(loss_fn(out, y), out, y)
    finally:
        model.train(was_training)
    return meter.compute()


def validate(p: LoopParts, state: TrainState) -> None:
    # the module itself, not its DDP wrapper: no gradient, nothing to synchronise but the sums
    # (and, with a plain BatchNorm, rank 0's running statistics: what its checkpoint holds)
    dist.broadcast_buffers(p.model)
    state.val_metrics = evaluate_batches(dist.unwrap(p.model), p.val.epoch(0), p.loss_fn, p.task)
    p.callbacks.on_validation_end(state)


def predict_batches(model: nn.Module, batches: Iterable[Any]) -> torch.Tensor:
    """The model's outputs for every batch, concatenated on the CPU (eval mode, inference_mode)."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.inference_mode():
            for x in batches:
                outs.append(model(x).cpu())  # per batch: device memory stays one batch deep
    finally:
        model.train(was_training)
    return torch.cat(outs)
