"""Elastic restarts: a worker died, torchrun's agent restarted the group, and the run goes on.

Under ``torchrun --max-restarts K`` (or ``gradstep fit --nproc N``, which passes ``[dist]
max_restarts``), when one worker fails the agent stops the others and starts the whole group
again with the same command; each new worker sees ``TORCHELASTIC_RESTART_COUNT > 0``. A fresh
``fit`` would start a new run (``name-2``), so gradstep remembers, per elastic job, which run
directory the job trains: rank 0 of the first attempt writes ``[run] dir/.elastic/<run
id>.json`` (``{"run": "<name>"}``, atomically) when it creates the run directory, the run id
being the agent's ``TORCHELASTIC_RUN_ID`` (torchrun's ``--rdzv-id``; a fresh one for
``--standalone``). A restarted ``fit`` resumes that run directory from its newest checkpoint
that verifies (:func:`restart_target`), saying so once; if the first attempt died before its
first checkpoint, the run starts again in the same directory; before its run directory
existed, it starts as new.

Multi-node jobs must give every node the same ``--rdzv-id`` (the SLURM job id, say): the
marker is looked up by it, on storage every node shares (as the run directory must be);
torchrun's default id ``none`` (multi-node without ``--rdzv-id``) is never looked up, since
every such job would share it. A script that calls ``fit`` twice has a marker per call
(``<id>-1.json`` for the second). Only restarts after a failure count
(``TORCHELASTIC_RESTART_COUNT``): a membership change of ``--nnodes MIN:MAX`` restarts the
workers without counting, and they start a new run.

Example (what :meth:`~gradstep.trainer.Trainer.fit` does)::

    target = restart_target(cfg.run.dir)    # None on a first attempt
    ...
    record(cfg.run.dir, run_dir)            # rank 0, right after creating the run directory
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

FOLDER = ".elastic"


def restart_count() -> int:
    """How many times the elastic agent has restarted this job's workers (0: first attempt,
    or not under torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


_fits = 0  # fit() calls in this process: a script that trains twice has two runs


def begin_fit() -> int:
    """This process's fit number (0, 1, ...): the n-th fit of a restarted script resumes the
    run the n-th fit of its first attempt created."""
    global _fits
    _fits += 1
    return _fits - 1


def _marker(runs: str | Path, index: int) -> Path | None:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or run_id == "none":  # torchrun's default id: every such job would share it
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:200].lstrip(".") or "_"
    return Path(runs) / FOLDER / (f"{safe}.json" if index == 0 else f"{safe}-{index}.json")


def record(runs: str | Path, run_dir: Path, index: int = 0) -> None:
    """Remember ``run_dir`` as this elastic job's run (no-op outside torchrun)."""
    marker = _marker(runs, index)
    if marker is None:
        return
    from gradstep.rundir import write_atomic

    marker.parent.mkdir(exist_ok=True)
    write_atomic(marker, json.dumps({"run": run_dir.name}) + "\n")


def restart_target(runs: str | Path, index: int = 0) -> Path | None:
    """The run directory a restarted worker resumes (None: a first attempt, or the first
    attempt never created its run directory)."""
    if restart_count() <= 0:
        return None
    marker = _marker(runs, index)
    if marker is None or not marker.is_file():
        return None
    try:
        name = json.loads(marker.read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        return None
    target = Path(runs) / name
    return target if (target / "config.toml").is_file() else None
