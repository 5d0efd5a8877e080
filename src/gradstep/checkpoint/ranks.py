"""Every rank's own part of a checkpoint under DDP, and which part a resumed rank takes back.

What differs between the ranks of a run at a step boundary is small: each one's random
generators (dropout draws from them) and each one's running train metrics for the epoch (the
:class:`~gradstep.metrics.Meter` holds a rank's own sums until a log line or the epoch's end
reduces them). Weights, optimizer state, progress and the callbacks' states are the same on
every rank (DDP all-reduces the gradients; everything else follows from them and from the
reduced metrics), so rank 0's are saved once.

At each checkpoint every rank encodes its part as JSON, and the parts are gathered as byte
tensors (two ``all_gather`` calls: the lengths, then the bytes padded to the longest) — never
through ``*_object`` collectives, which pickle. Rank 0 writes them into ``state.json`` as
``"ranks": [part of rank 0, part of rank 1, ...]``; the top-level ``rng`` stays rank 0's and
the top-level ``meter`` holds the sums of all ranks, so a checkpoint reads like a
single-process one.

Resume (:func:`own_part`): under the same world size each rank takes back its own part, so the
run continues bit-identical. Under another world size (same effective batch: see
:func:`reshaped`) rank 0 takes the global sums and the other ranks start the epoch's sums at
zero (the reduced metrics are the same sums, added in another order: equal to float rounding);
rank ``r`` takes the generators of old rank ``r`` where there was one, else rank 0's.

Example::

    parts = RankParts().gather(state)       # on every rank, at the same step
    own_part(saved, rank=1, world=2)        # -> (meter state, rng state) for rank 1
"""

from __future__ import annotations

import json
from typing import Any

import torch

from gradstep import dist
from gradstep.checkpoint.content import RngCapture


class RankParts:
    """One rank's generators and running sums, gathered from every rank at a checkpoint."""

    def __init__(self) -> None:
        self._rng = RngCapture()
        self.failed = False  # a rank said its checkpoint writes failed (rank 0's writer)

    def local_json(self, state: Any) -> str:
        meter = state.train_meter.state_dict() if state.in_epoch else None
        return f'{{"rng": {self._rng.json()}, "meter": {json.dumps(meter)}}}'

    def gather(self, state: Any, *, failed: bool = False) -> list[str]:
        """Every rank's part as JSON text, in rank order (every rank calls it at the same
        step; each gets the whole list). ``failed``: this rank's writes failed; afterwards
        :attr:`failed` says whether any rank's did (a byte before each part carries it), so
        the ranks stop at the same step."""
        mine = (b"F" if failed else b" ") + self.local_json(state).encode()
        if not dist.distributed():
            self.failed = failed
            return [mine[1:].decode()]
        device = dist.collective_device()
        world = torch.distributed.get_world_size()
        size = torch.tensor([len(mine)], dtype=torch.int64, device=device)
        sizes = [torch.empty_like(size) for _ in range(world)]
        torch.distributed.all_gather(sizes, size)
        lengths = [int(s.item()) for s in sizes]
        longest = max(lengths)
        buf = torch.zeros(longest, dtype=torch.uint8)
        buf[: len(mine)] = torch.frombuffer(bytearray(mine), dtype=torch.uint8)
        buf = buf.to(device)
        parts = [torch.empty_like(buf) for _ in range(world)]
        torch.distributed.all_gather(parts, buf)
        texts = [bytes(p[:n].cpu().numpy().tobytes()) for p, n in zip(parts, lengths, strict=True)]
        self.failed = any(t[:1] == b"F" for t in texts)
        return [t[1:].decode() for t in texts]


def summed_meter(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ranks' meter states added up: what one process would hold for the same samples."""
    meters = [p["meter"] for p in parts if p.get("meter") is not None]
    if not meters:
        return None

    def add(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if isinstance(present[0], list):
            return [sum(col) for col in zip(*present, strict=True)]
        return sum(present)

    return {
        "samples": sum(m["samples"] for m in meters),
        "total": add([m["total"] for m in meters]),
        "window": add([m["window"] for m in meters]),
        "window_n": sum(m["window_n"] for m in meters),
    }


def own_part(
    saved: dict[str, Any], *, rank: int, world: int
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(meter state, rng state)`` rank ``rank`` of a ``world``-process run resumes with."""
    parts = saved.get("ranks")
    if isinstance(parts, list) and len(parts) == world:
        own = parts[rank]
        return own.get("meter"), own["rng"]
    rng = parts[rank]["rng"] if isinstance(parts, list) and rank < len(parts) else saved["rng"]
    if rank == 0:
        return saved.get("meter"), rng
    meter = saved.get("meter")
    if meter is None:
        return None, rng
    return {"samples": 0, "total": None, "window": None, "window_n": 0}, rng


def effective_batch(fingerprint: dict[str, Any]) -> int | None:
    """Samples per optimizer step of the run a fingerprint describes (batch × accumulate ×
    world; None for full-batch training)."""
    b = fingerprint.get("batch_size")
    if not isinstance(b, int):
        return None
    acc = fingerprint.get("accumulate", 1)
    world = fingerprint.get("world_size", 1)
    return b * (acc if isinstance(acc, int) else 1) * (world if isinstance(world, int) else 1)


_SHAPE = ("batch_size", "accumulate", "world_size", "effective_batch")


def reshaped(saved: dict[str, Any], current: dict[str, Any]) -> tuple[dict, dict, str | None]:
    """Compare two runs' batching as their effective batch: a resume on another number of
    processes (or another micro-batch) with the same samples per step continues the same run,
    so batch size, accumulation and world size are then left out of the comparison. Returns
    the two fingerprints to compare and, when the effective batch differs, the line naming both
    values (``None`` otherwise).

    ``drop_last`` drops the epoch's partial block of ``batch_size × world`` samples: another
    block size drops other samples, so with it the three must match as before."""
    a, b = effective_batch(saved), effective_batch(current)
    same_block = block_of(saved) == block_of(current)
    if a is None or b is None or (current.get("drop_last") and not same_block):
        return saved, current, None
    strip = {k: v for k, v in saved.items() if k not in _SHAPE}
    now = {k: v for k, v in current.items() if k not in _SHAPE}
    if a == b:
        return strip, now, None
    return (
        strip,
        now,
        f"effective batch (batch_size × accumulate × processes): {a} = {_shape(saved)} in the "
        f"checkpoint, {b} = {_shape(current)} now",
    )


def block_of(fp: dict[str, Any]) -> Any:
    """A run's micro-batch: ``batch_size × world_size`` samples of the epoch's order."""
    return (fp.get("batch_size"), fp.get("world_size", 1))


def _shape(fp: dict[str, Any]) -> str:
    return f"{fp.get('batch_size')} × {fp.get('accumulate', 1)} × {fp.get('world_size', 1)}"
