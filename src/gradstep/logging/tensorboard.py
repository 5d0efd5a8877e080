"""TensorBoard scalars in the run directory: ``tensorboard --logdir runs`` shows every run.

Every record the logger makes becomes scalars at the run's global step:

* step lines: ``train/loss`` (the mean since the previous line), ``train/lr``,
  ``train/grad_norm`` and ``grad_norm/<parameter>`` when logged;
* validations: ``val/loss``, ``val/acc`` (or ``val/mae``);
* epoch records: ``epoch/train_loss``, ``epoch/val_acc``, ``epoch/lr``, ``epoch/grad_norm``, ...
  and ``epoch/epoch`` (which epoch ended at that step).

The events are TensorBoard's own: its ``Event`` / ``Summary`` / ``SessionLog`` protocol buffers
(``tensorboard.compat.proto``), framed and checksummed (length, masked CRC-32C, data, masked
CRC-32C) by its ``RecordWriter`` (``tensorboard.summary.writer.record_writer``), the layer under
both ``tensorboard``'s ``EventFileWriter`` and ``torch.utils.tensorboard.SummaryWriter``. The test
suite reads the files back with TensorBoard's own reader, which checks every CRC.

TensorBoard is imported on the first write (:meth:`TensorBoardSink.open`, at fit start), never at
module import, so ``import gradstep`` stays free of it. Its import cost once torch is imported,
measured here (a fresh process each, perf_counter around the import, 15 interleaved runs each,
median (min-max), on a 2-core machine busy with another test run):

* ``from torch.utils.tensorboard import SummaryWriter``: 187 ms (121-228);
* ``from tensorboard.summary.writer.event_file_writer import EventFileWriter``: 169 ms (123-239);
* the protos + ``RecordWriter`` used here: 174 ms (125-212) — the same modules as
  ``EventFileWriter`` (the ``tensorboard.summary`` package, whose ``v1`` pulls the TensorFlow stub
  and ``absl.flags``: most of the cost); the protos alone are 21 ms.

So ``SummaryWriter`` is no lighter than ``EventFileWriter``, and neither is lighter than the
record writer they are built on: the choice is made by behaviour, not cost. Both writers hand
each event to a background thread that flushes every ``flush_secs``, and write through
TensorBoard's ``GFile``, which opens, appends and closes the file for every record. That breaks
the sink contract (:mod:`gradstep.logging.base`), as tried here: a refused write surfaces only at
the next ``flush``, naming the file as ``bytes``, then again at every call and at ``close()`` (a
second error over the first), while the dying thread prints its own traceback to stderr;
``EventFileWriter`` creates a missing run directory instead of failing; and no descriptor of the
event file stays open (``tests/test_logging_disk.py`` fills the disk under it). Here the sink
opens the file itself and writes and flushes each record in the calling thread: on disk at once,
like ``metrics.jsonl``, so a killed run keeps every event it logged (no ``close`` needed), and a
full disk is found at the record it refused.

A resumed run starts a new event file whose second event is a ``SessionLog.START`` at the first
step it runs — the ``purge_step`` event ``SummaryWriter(purge_step=...)`` writes — which tells
TensorBoard to drop the older files' events from that step on (the same cut ``metrics.jsonl``
gets), so curves never show a step twice.

Values beyond float32's range (TensorBoard's scalars are float32) are written as the infinity of
their sign; NaN and infinities as they are.

A write the disk refuses raises its ``OSError`` naming the event file, and leaves the sink closed
(see :mod:`gradstep.logging.base`).
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from gradstep.logging.base import Sink, drop_file, name_file

F32_MAX = 3.4028234663852886e38  # the largest finite float32


def _float32(value: float) -> float:
    """``value`` as a float32 scalar holds it: beyond float32's range, the infinity of its sign
    (never the largest float32, which would pass for a real value)."""
    if math.isfinite(value) and abs(value) > F32_MAX:
        return math.copysign(math.inf, value)
    return value


def _tensorboard() -> SimpleNamespace:
    """TensorBoard's protocol buffers and record writer, imported on first use: ~0.17 s."""
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    return SimpleNamespace(
        Event=Event, SessionLog=SessionLog, Summary=Summary, RecordWriter=RecordWriter
    )


class TensorBoardSink(Sink):
    """Writes ``events.out.tfevents.*`` into ``run_dir``. ``resumed_step``: the step a resumed run
    continues from (its events after that step, from earlier files, are dropped by TensorBoard)."""

    def __init__(self, run_dir: Path, resumed_step: int | None = None) -> None:
        self.run_dir = run_dir
        self.resumed_step = resumed_step
        self.path: Path | None = None  # the event file, once open
        self._f: IO[bytes] | None = None
        self._tb: SimpleNamespace | None = None
        self._records: Any = None  # TensorBoard's RecordWriter over _f

    def open(self, state: Any) -> None:
        tb = self._tb = _tensorboard()
        stamp = time.time()
        name = f"events.out.tfevents.{int(stamp)}.{socket.gethostname()}.{os.getpid()}.gradstep"
        path = self.run_dir / name
        n = 1
        while path.exists():  # two fits in one second and process
            n += 1
            path = self.run_dir / f"{name}{n}"
        self.path = path
        self._f = path.open("ab")
        self._records = tb.RecordWriter(self._f)
        events = [tb.Event(wall_time=stamp, step=0, file_version="brain.Event:2")]
        if self.resumed_step is not None:
            # the purge step: TensorBoard drops what older files hold from this step on
            start = tb.SessionLog(status=tb.SessionLog.START)
            events.append(tb.Event(wall_time=stamp, step=self.resumed_step + 1, session_log=start))
        self._put(events)

    def _scalars(self, record: dict[str, Any]) -> dict[str, float]:
        kind = record["kind"]
        skip = {"kind", "step", "epoch", "batch", "epochs", "batches", "total_steps", "partial"}
        out: dict[str, float] = {}
        for key, value in record.items():
            if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if kind == "step":
                tag = key if key.startswith("grad_norm/") else f"train/{key}"
            elif kind == "val":
                tag = f"val/{key.removeprefix('val_')}"
            else:
                tag = f"epoch/{key}"
            out[tag] = float(value)
        if kind == "epoch":
            out["epoch/epoch"] = float(record["epoch"])
        return out

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        scalars = self._scalars(record)
        if scalars:
            tb = self._tb
            assert tb is not None
            values = [
                tb.Summary.Value(tag=tag, simple_value=_float32(value))
                for tag, value in scalars.items()
            ]
            event = tb.Event(
                wall_time=time.time(), step=int(record["step"]), summary=tb.Summary(value=values)
            )
            self._put([event])

    def _put(self, events: list[Any]) -> None:
        """Write and flush: on disk at once, like ``metrics.jsonl``, so a killed run keeps every
        event it logged before its checkpoint (the resume drops only what came after), and a
        full disk is found at the record it refused."""
        assert self._f is not None and self.path is not None
        try:
            for event in events:
                self._records.write(event.SerializeToString())
            self._f.flush()
        except OSError as err:
            f, self._f, self._records = self._f, None, None
            drop_file(f, err, self.path)
            raise

    def close(self) -> None:
        if self._f is not None:
            f, self._f, self._records = self._f, None, None  # closed even if the close fails
            try:
                f.close()
            except OSError as err:
                assert self.path is not None
                name_file(err, self.path)
                raise
