"""One run, one writer: the advisory lock a fit or resume holds on its run directory.

``RUN/.lock`` is locked with ``fcntl.flock`` from before anything in the run directory changes
(a resume takes it before it cuts ``metrics.jsonl`` back or rewrites ``config.toml``; a fit as
soon as it has made its new directory) until the end of ``Trainer.fit``. The file holds the
holder's process id, so a second writer — another ``gradstep resume`` of the run, or
``fit(resume=...)`` from Python — is refused (exit 2) with a line naming that process:

    gradstep: error: runs/x is being written by another process (pid 4242, a gradstep fit or
    resume); wait for it to end, or stop it

The lock belongs to the open file, so the operating system drops it when the process ends in
any way, ``kill -9`` included: nothing stale is ever left to clean up. The file itself stays
(removing it would let two processes lock two different files of the same name); readers
(``eval``, ``predict``, ``report``, ...) never look at it. It is opened without following a
link and must be a regular file, since a run directory is data (see README: what a checkpoint
can and cannot do). On a system without ``fcntl`` (Windows) nothing is locked.

Example::

    with RunLock(run_dir):
        ...  # write the run
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from gradstep.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLocked(UserError):
    """Another live process holds the run directory's lock."""


def _holder(fd: int) -> int | None:
    """The process id written in the lock file (None when it holds none yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class RunLock:
    """The lock on ``run_dir``: :meth:`acquire` or refuse, :meth:`release` (idempotent)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Lock the run, or raise :class:`RunLocked` naming the holder's pid. An ``OSError``
        (a read-only or full disk) is raised as it is, for the caller's one-line message."""
        if fcntl is None or self._fd is not None:
            return self
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UserError(f"{self.path}: a symlink; remove it (it is only a lock)") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UserError(f"{self.path}: not a regular file; remove it (it is only a lock)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder(fd)
                who = f"pid {pid}, " if pid is not None else ""
                raise RunLocked(
                    f"{self.run_dir} is being written by another process ({who}a gradstep fit "
                    "or resume); wait for it to end, or stop it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock (closing the file drops the lock); the file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
