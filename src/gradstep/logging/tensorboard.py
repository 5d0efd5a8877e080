"""TensorBoard scalars in the run directory: ``tensorboard --logdir runs`` shows every run.

Every record the logger makes becomes scalars at the run's global step:

* step lines: ``train/loss`` (the mean since the previous line), ``train/lr``,
  ``train/grad_norm`` and ``grad_norm/<parameter>`` when logged;
* validations: ``val/loss``, ``val/acc`` (or ``val/mae``);
* epoch records: ``epoch/train_loss``, ``epoch/val_acc``, ``epoch/lr``, ``epoch/grad_norm``, ...
  and ``epoch/epoch`` (which epoch ended at that step).

The event file is written here, without importing TensorBoard or TensorFlow (importing
``torch.utils.tensorboard`` costs about 1.5 s per process): the format is a sequence of records
— an 8-byte length, its masked CRC-32C, a serialised ``Event`` protocol buffer, its masked
CRC-32C — and the few protobuf fields scalars need are encoded by hand below. The test suite reads
the files back with TensorBoard's own reader.

A resumed run starts a new event file with a ``SessionLog.START`` at the first step it runs,
which tells TensorBoard to drop the older files' events from that step on (the same cut
``metrics.jsonl`` gets), so curves never show a step twice.

A write the disk refuses raises its ``OSError`` naming the event file, and leaves the sink closed
(see :mod:`gradstep.logging.base`).
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import IO, Any

from gradstep.logging.base import Sink, drop_file, name_file


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()
F32_MAX = 3.4028234663852886e38


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord files use."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as protobuf writes it
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, *, wall_time: float | None = None, **fields: bytes) -> bytes:
    """An ``Event``: wall_time (1, double), step (2, int64), then the given message fields."""
    out = b"\x09" + struct.pack("<d", time.time() if wall_time is None else wall_time)
    out += b"\x10" + _varint(step)
    numbers = {"file_version": 3, "summary": 5, "session_log": 7}
    for name, payload in fields.items():
        out += _field_bytes(numbers[name], payload)
    return out


def _summary(scalars: dict[str, float]) -> bytes:
    """A ``Summary`` of ``Value(tag=..., simple_value=...)`` entries."""
    values = b""
    for tag, value in scalars.items():
        if math.isfinite(value) and abs(value) > F32_MAX:  # float32 cannot hold it: Inf
            value = math.copysign(math.inf, value)
        v = _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
        values += _field_bytes(1, v)
    return values


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + _masked(header) + data + _masked(data)


class TensorBoardSink(Sink):
    """Writes ``events.out.tfevents.*`` into ``run_dir``. ``resumed_step``: the step a resumed run
    continues from (its events after that step, from earlier files, are dropped by TensorBoard)."""

    def __init__(self, run_dir: Path, resumed_step: int | None = None) -> None:
        self.run_dir = run_dir
        self.resumed_step = resumed_step
        self.path: Path | None = None  # the event file, once open
        self._f: IO[bytes] | None = None

    def open(self, state: Any) -> None:
        stamp = time.time()
        name = f"events.out.tfevents.{int(stamp)}.{socket.gethostname()}.{os.getpid()}.gradstep"
        path = self.run_dir / name
        n = 1
        while path.exists():  # two fits in one second and process
            n += 1
            path = self.run_dir / f"{name}{n}"
        self.path = path
        self._f = path.open("ab")
        data = _record(_event(0, wall_time=stamp, file_version=b"brain.Event:2"))
        if self.resumed_step is not None:
            start = b"\x08\x01"  # SessionLog { status: START }
            # TensorBoard drops what older files hold from this step on
            data += _record(_event(self.resumed_step + 1, session_log=start))
        self._put(data)

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
            self._put(_record(_event(int(record["step"]), summary=_summary(scalars))))

    def _put(self, data: bytes) -> None:
        """Write and flush: on disk at once, like ``metrics.jsonl``, so a killed run keeps every
        event it logged before its checkpoint (the resume drops only what came after), and a
        full disk is found at the record it refused."""
        assert self._f is not None and self.path is not None
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as err:
            f, self._f = self._f, None
            drop_file(f, err, self.path)
            raise

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None  # closed even if the close fails: it never raises twice
            try:
                f.close()
            except OSError as err:
                assert self.path is not None
                name_file(err, self.path)
                raise
