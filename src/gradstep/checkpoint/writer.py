"""Checkpoints written off the training thread: one at a time, in order, never half-reported.

The training thread takes a *snapshot* at a step boundary — the files' bytes: safetensors of the
weights and optimizer state, JSON of the rest; about a millisecond for the MNIST example —
and hands it to :class:`CheckpointWriter`, whose one worker thread hashes, writes and fsyncs the
files, renames the directory into place (see
:func:`~gradstep.checkpoint.files.write_checkpoint_dir`), then points ``latest`` (and ``best``) at
it and prunes old checkpoints. The worker runs no torch op (one would start a second OpenMP team
competing with training for the cores); file I/O, syncs and hashing release the GIL, so training
goes on meanwhile. Its CPU time (hashing, page-cache copies, syscalls: about 2 ms for the MNIST
example's 0.8 MB on a busy 2-core machine) still competes with training on a CPU-only box;
``bench/checkpoint.py`` measures the share. (A niced worker was tried and measured worse: it
falls behind, and training then waits at the queue.)

Pruning keeps one pruned directory aside, renamed to a hidden ``.tmp-spare-*``, and the next
checkpoint is written into it: its files are overwritten in place, so the filesystem neither
frees their blocks and cached pages nor allocates new ones — that took 40 % of the worker's CPU
time for the MNIST example. The spare is not a checkpoint (``.tmp-*`` names are never listed,
and a resume removes leftovers); :meth:`CheckpointWriter.close` removes it.

Writes happen in order; at most ``max_pending`` (2) snapshots wait or are being written, and
:meth:`CheckpointWriter.submit` blocks beyond that, which bounds the memory snapshots hold. A
checkpoint is durable once its write has finished — a moment after it was taken; a run killed in
between resumes from the one before. A failed write is reported (by :meth:`poll`, :meth:`submit`,
:meth:`wait` or :meth:`close`) as a :class:`~gradstep.checkpoint.files.SaveError` naming the path,
and ``latest`` / ``best`` never point at a checkpoint that was not completely written.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradstep.checkpoint.files import (
    STEP_DIR,
    TMP_PREFIX,
    SaveError,
    remove_path,
    write_checkpoint_dir,
)


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(name: str) -> int:
    """The step number of a ``step-NNNNNN`` name (order checkpoints by this, never by name)."""
    m = STEP_DIR.match(name)
    return int(m.group(1)) if m else -1


@dataclass
class Job:
    """One checkpoint to write: its files' bytes, manifest extras, whether it is the new best."""

    name: str
    files: dict[str, bytes | bytearray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    best: bool = False


@dataclass
class Outcome:
    job: Job
    path: Path | None = None
    error: SaveError | None = None


def point(directory: Path, link: str, target: str) -> None:
    """Atomically make ``directory/link`` a relative symlink to ``target``: a new symlink under
    a hidden name (one a killed run left is replaced), renamed over the old one. A ``link``
    that is a real directory (a run copied with ``cp -rL``) is kept aside as
    ``link.copy-<random>``. Few plain ``os`` calls: it runs on the writer thread, beside
    training, at every checkpoint."""
    tmp = os.path.join(directory, f".{link}.tmp")
    try:
        os.symlink(target, tmp)
    except FileExistsError:  # left by a killed run (a directory, if someone made one)
        remove_path(tmp)
        os.symlink(target, tmp)
    where = os.path.join(directory, link)
    try:
        os.replace(tmp, where)
    except IsADirectoryError:
        os.rename(where, f"{where}.copy-{secrets.token_hex(3)}")
        os.replace(tmp, where)


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
    ``background`` (write on a worker thread; False writes in the caller, for tests/debugging),
    ``max_pending`` (snapshots waiting or being written before :meth:`submit` blocks)."""

    def __init__(
        self, directory: Path, keep: int, background: bool = True, max_pending: int = 2
    ) -> None:
        self.directory = directory
        self.keep = keep
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(1, "gradstep-ckpt") if background else None
        self._pending: deque[Future[Outcome]] = deque()
        self._done: list[Outcome] = []
        self._dirs: list[str] | None = None  # step directories, oldest first; scanned once
        self._best: str | None = None
        self._spare: Path | None = None  # a pruned checkpoint's directory, to write into next

    def _write(self, job: Job) -> Outcome:
        spare, self._spare = self._spare, None
        try:
            final = self.directory / job.name
            try:
                path = write_checkpoint_dir(final, job.files, job.meta, spare)
            except SaveError:
                if spare is None:
                    raise
                path = write_checkpoint_dir(final, job.files, job.meta)  # a fresh directory
            point(self.directory, "latest", job.name)
            if job.best:
                point(self.directory, "best", job.name)
                self._best = job.name
            self._prune(job.name)
        except SaveError as err:
            return Outcome(job, error=err)
        except OSError as err:  # a link or prune that failed after the data was safe
            return Outcome(job, error=SaveError(f"checkpoint {self.directory}: {err}"))
        return Outcome(job, path=path)

    def _prune(self, written: str) -> None:
        """Remove all but the newest ``keep`` step directories and ``best``. The directory is
        scanned once (a resumed run's, a re-used folder's); after that this writer's own list
        is kept, so a save costs no directory scan or stat calls."""
        if self._dirs is None:
            best = self.directory / "best"
            self._best = os.readlink(best) if best.is_symlink() else None
            self._dirs = [p.name for _, p in step_dirs(self.directory)]
            for p in self.directory.glob(f"{TMP_PREFIX}spare-*"):  # a killed run's spare
                shutil.rmtree(p, ignore_errors=True)
        elif written not in self._dirs:
            self._dirs.append(written)
        # by step number: as names, step-1000000 would sort before step-999999 (a run at batch
        # 1 on MNIST passes a million steps), and pruning would delete the newest checkpoints
        self._dirs.sort(key=step_of)
        excess = max(0, len(self._dirs) - self.keep)
        for name in self._dirs[:excess]:
            if name == self._best:
                continue
            path = os.path.join(self.directory, name)
            try:
                os.listdir(path)
            except OSError:  # unreadable (permissions, I/O): not ours to recycle or delete
                continue
            if self._spare is None:  # kept, hidden, for the next checkpoint to write into
                spare = self.directory / f"{TMP_PREFIX}spare-{name}"
                try:
                    os.rename(path, spare)
                    self._spare = spare
                    continue
                except OSError:
                    pass
            shutil.rmtree(path, ignore_errors=True)
        self._dirs = [n for n in self._dirs[:excess] if n == self._best] + self._dirs[excess:]

    def submit(self, job: Job) -> list[Outcome]:
        """Queue ``job`` (first waiting while ``max_pending`` are queued); return the outcomes
        of writes that finished and were not yet collected, oldest first."""
        finished = self.wait(self.max_pending - 1)
        if self._pool is None:
            self._done.append(self._write(job))
        else:
            self._pending.append(self._pool.submit(self._write, job))
        return finished

    def poll(self) -> list[Outcome]:
        """Outcomes of the writes finished since the last call, oldest first. Cheap: no wait."""
        while self._pending and self._pending[0].done():
            self._done.append(self._pending.popleft().result())
        done, self._done = self._done, []
        return done

    def wait(self, pending: int = 0) -> list[Outcome]:
        """Block until at most ``pending`` writes are queued; return the uncollected outcomes."""
        while len(self._pending) > pending:
            self._done.append(self._pending.popleft().result())
        return self.poll()

    def close(self) -> list[Outcome]:
        outcomes = self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._spare is not None:
            shutil.rmtree(self._spare, ignore_errors=True)
            self._spare = None
        return outcomes
