"""A logging sink: where metric records go. Adding one (TensorBoard, CSV, ...) is one small file.

A sink gets every record the :class:`~gradstep.callbacks.MetricsLogger` makes (see its docstring
for the record kinds). Example, a sink that keeps the epoch records in memory::

    class EpochList(Sink):
        def __init__(self):
            self.epochs = []

        def write(self, record):
            if record["kind"] == "epoch":
                self.epochs.append(record)

A sink that cannot write (disk full, read-only or unwritable run directory) raises the
``OSError``, with ``filename`` naming its file; the logger turns it into one
:class:`~gradstep.checkpoint.files.SaveError` that stops the run. Such a sink is closed from then
on: ``close`` never raises a second time for the same trouble (see :func:`drop_file`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any


class Sink:
    """Base class. ``open`` is called once at fit start, ``close`` at the end (or on an error)."""

    def open(self, state: Any) -> None:
        return None

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


def os_reason(err: OSError) -> str:
    """What went wrong, without the errno and file name around it: ``No space left on device``."""
    return err.strerror or str(err) or type(err).__name__


def cannot_write(path: str | Path, err: OSError) -> str:
    """The one line a failed write reports: ``cannot write PATH: No space left on device``."""
    return f"cannot write {path}: {os_reason(err)}"


def name_file(err: OSError, path: Path) -> None:
    """Make ``err`` name ``path`` (a failed flush names no file), for the one-line message."""
    if err.filename is None:
        err.filename = str(path)


def drop_file(f: IO[Any], err: OSError, path: Path) -> None:
    """After ``err`` on a write to ``f`` (the file at ``path``): close ``f`` without raising —
    what it still buffers is what the disk refused, and flushing it again would only fail
    again — and make ``err`` name ``path``; the caller re-raises it."""
    try:
        f.close()  # the descriptor is closed even when this last flush fails
    except OSError:
        pass
    name_file(err, path)


def target_of(err: OSError) -> Path | None:
    """The file ``err`` names, or None. A write through a temporary sibling (``.NAME.XXXX.tmp``,
    as :func:`gradstep.rundir.write_atomic` makes) names the file it was to become: that is the
    one the user knows."""
    if not err.filename:
        return None
    path = Path(os.fsdecode(err.filename))
    if path.name.startswith(".") and path.name.endswith(".tmp") and path.name.count(".") >= 3:
        return path.with_name(path.name[1:].rsplit(".", 2)[0])
    return path
