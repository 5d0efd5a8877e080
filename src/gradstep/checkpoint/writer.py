"""Checkpoints written off the training thread: one at a time, in order, never half-reported.

The training thread takes a *snapshot* at a step boundary — CPU copies of the tensors and the JSON
state, a few milliseconds at most — and hands it to :class:`CheckpointWriter`, whose one worker
thread serialises it, writes and fsyncs the files, renames the directory into place (see
:func:`~gradstep.checkpoint.files.write_checkpoint_dir`), then points ``latest`` (and ``best``) at
it and prunes old checkpoints. File I/O, fsync and hashing release the GIL, so training goes on
meanwhile; this is what keeps per-epoch checkpointing under 2 % of training time.

At most one write is in flight: :meth:`CheckpointWriter.submit` waits for the previous one first,
which bounds the memory held by snapshots. A failed write is reported (by :meth:`poll`,
:meth:`submit` or :meth:`close`) as a :class:`~gradstep.checkpoint.files.SaveError` naming the
path, and ``latest`` / ``best`` never point at a checkpoint that was not completely written.
"""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradstep.checkpoint.files import (
    SaveError,
    json_bytes,
    tensors_to_bytes,
    write_checkpoint_dir,
)

STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


@dataclass
class Job:
    """One checkpoint to write: tensor files, JSON files, and whether it is the new best."""

    name: str
    tensors: dict[str, dict[str, torch.Tensor]]
    json: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    best: bool = False


@dataclass
class Outcome:
    job: Job
    path: Path | None = None
    error: SaveError | None = None


def point(directory: Path, link: str, target: str) -> None:
    """Atomically make ``directory/link`` a relative symlink to ``target``."""
    tmp = directory / f".{link}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, directory / link)


def step_dirs(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-NNNNNN`` directory, oldest first (unverified)."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink():
            found.append((int(m.group(1)), p))
    return sorted(found)


class CheckpointWriter:
    """Args: ``directory`` (``runs/<name>/checkpoints``), ``keep`` (newest kept besides best),
    ``background`` (write on a worker thread; False writes in the caller, for tests/debugging)."""

    def __init__(self, directory: Path, keep: int, background: bool = True) -> None:
        self.directory = directory
        self.keep = keep
        self._pool = ThreadPoolExecutor(1, "gradstep-ckpt") if background else None
        self._pending: Future[Outcome] | None = None
        self._done: Outcome | None = None
        self.written: list[Path] = []

    def _write(self, job: Job) -> Outcome:
        try:
            files: dict[str, bytes] = {}
            for name, tensors in job.tensors.items():
                files[name] = tensors_to_bytes(tensors)
            for name, obj in job.json.items():
                files[name] = obj if isinstance(obj, bytes) else json_bytes(obj)
            path = write_checkpoint_dir(self.directory / job.name, files, job.meta)
            point(self.directory, "latest", job.name)
            if job.best:
                point(self.directory, "best", job.name)
            self._prune()
        except SaveError as err:
            return Outcome(job, error=err)
        except OSError as err:  # a link or prune that failed after the data was safe
            return Outcome(job, error=SaveError(f"checkpoint {self.directory}: {err}"))
        return Outcome(job, path=path)

    def _prune(self) -> None:
        best = self.directory / "best"
        keep_best = os.readlink(best) if best.is_symlink() else None
        dirs = step_dirs(self.directory)
        for _, p in dirs[: max(0, len(dirs) - self.keep)]:
            if p.name != keep_best:
                shutil.rmtree(p, ignore_errors=True)

    def submit(self, job: Job) -> Outcome | None:
        """Start writing ``job``; return the outcome of the previous write if not yet collected."""
        previous = self.wait()
        if self._pool is None:
            self._done = self._record(self._write(job))
        else:
            self._pending = self._pool.submit(self._write, job)
        return previous

    def _record(self, outcome: Outcome) -> Outcome:
        if outcome.path is not None:
            self.written.append(outcome.path)
        return outcome

    def poll(self) -> Outcome | None:
        """The outcome of the write in flight if it has finished (once), else None. Cheap."""
        if self._pending is not None and self._pending.done():
            return self.wait()
        if self._done is not None:
            done, self._done = self._done, None
            return done
        return None

    def wait(self) -> Outcome | None:
        """Block until the write in flight (if any) is done; return its uncollected outcome."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return self._record(pending.result())
        done, self._done = self._done, None
        return done

    def close(self) -> Outcome | None:
        outcome = self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        return outcome
