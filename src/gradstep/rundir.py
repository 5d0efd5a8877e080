"""The run directory: ``<dir>/<name>/``, created once, never reused, written atomically.

A new run never writes into an existing run's directory: if ``runs/<name>`` exists the run takes
``runs/<name>-2``, ``-3``, ... (``os.mkdir`` fails on an existing directory, so two runs started
at once cannot share one). Files that are rewritten (``summary.json``) are written to a temporary
sibling and renamed over, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def create_run_dir(parent: str | Path, name: str) -> Path:
    """Create and return a fresh ``parent/name`` (or ``name-2``, ``name-3``, ... if taken).

    ``parent`` (``[run] dir``) is created if missing. This is the first write of a run, so a
    place that cannot hold one — a file, a path under a file, a read-only folder, ``/proc`` —
    is a :class:`~gradstep.errors.UserError` naming it with the system's reason, and nothing
    is left behind. ``name`` must be one path component (the config checks ``[run] name``; a
    default name made from a config file's name is checked here), so a run never lands
    outside ``parent``.
    """
    # imported here: the config's rule for a run name is the one rule, and errors are UserError
    from gradstep.config import run_name_problem
    from gradstep.errors import UserError

    problem = run_name_problem(name)
    if problem is not None:
        raise UserError(f"[run] name = {name!r}: {problem}")
    where = f"[run] dir = {str(parent)!r}"
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{where}: cannot create a run directory there: it is a file")
    for i in range(1, 10_000):
        path = parent / (name if i == 1 else f"{name}-{i}")
        try:
            if i == 1:
                parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return path
        except FileExistsError:
            if not parent.is_dir():  # a file appeared there, or a path under a file
                raise UserError(
                    f"{where}: cannot create a run directory there: not a folder"
                ) from None
            continue
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise UserError(f"{where}: cannot create a run directory there: {reason}") from None
    raise RuntimeError(f"no free run directory name for {parent / name}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temporary file over ``path``, with the permissions a plain ``open``
    would have given it (``mkstemp`` makes files readable by their owner only)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_atomic(path: Path, text: str | bytes, *, sync: bool = True) -> None:
    """Write ``text`` (or bytes) to ``path`` via a fsync'd temporary sibling and a rename.
    ``sync=False`` skips the fsync, for files rebuilt from others (plots): still never seen
    half-written, but a power cut right after may leave the old one or an empty one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        binary = isinstance(text, bytes)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            f.write(text)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finite(obj: Any) -> Any:
    """Standard JSON has no NaN or Infinity: a diverged metric is written as null / "inf"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_finite(obj), indent=2, allow_nan=False, default=str)
    write_atomic(path, text + "\n")
