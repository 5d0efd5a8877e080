"""``summary.json``: what a run did, in one file (DESIGN.md's run-directory contract).

``global_step``, ``epochs_completed``, ``stop_reason``, ``final`` (the last epoch's metrics),
``best`` (``monitor``, ``value``, ``epoch``, ``step``, and the ``checkpoint`` holding those
weights, or null when none was written), ``checkpoints`` (those on disk), ``data``, ``model``,
``timings`` (of this process: a resumed run times its own part), ``versions``, ``command``,
``resumed_from`` for a resumed run, and ``error`` for a run an exception ended
(``stop_reason = "error"``): its type and first line, e.g. ``"SaveError: cannot write
runs/x/metrics.jsonl: No space left on device; the run stopped at step 123"``.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradstep.errors import first_line

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gradstep": __version__,
    }


def best_from_history(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Without checkpoints: the epoch with the lowest val_loss (train_loss without validation)."""
    last = history[-1] if history else {}
    monitor = "val_loss" if "val_loss" in last else "train_loss"
    scored = [h for h in history if h.get(monitor) is not None]
    if not scored:
        return None
    h = min(scored, key=lambda r: r[monitor])
    return {
        "monitor": monitor,
        "value": h[monitor],
        "epoch": h["epoch"],
        "step": h["step"],
        "checkpoint": None,
    }


def best_from_checkpointer(ckpt: Any, history: list[dict[str, Any]]) -> dict[str, Any] | None:
    if ckpt.best_step is None:
        return None
    path = ckpt.directory / ckpt.best_name if ckpt.best_name else None
    # the epoch the checkpoint was taken in: the first epoch record at or after its step (a
    # checkpoint every N steps is mostly mid-epoch); None while that epoch has no record yet
    epoch = next((h["epoch"] for h in history if h["step"] >= ckpt.best_step), None)
    return {
        "monitor": ckpt.monitor,
        "value": ckpt.best_value,
        "epoch": epoch,
        "step": ckpt.best_step,
        "checkpoint": str(path) if path is not None and path.is_dir() else None,
    }


def checkpoints_on_disk(folder: Path | None) -> list[str]:
    from gradstep.checkpoint.writer import step_dirs

    return [p.name for _, p in step_dirs(folder)] if folder is not None else []


def build_summary(
    *,
    cfg: Any,
    state: Any,
    model: torch.nn.Module,
    device: torch.device,
    data_info: dict[str, Any],
    timings: dict[str, float],
    run_dir: Path | None,
    checkpointer: Any = None,
    resumed_from: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` of a run; ``error`` is the exception that ended it, if one did."""
    last = state.history[-1] if state.history else {}
    final = {k: v for k, v in last.items() if k.startswith(("train_", "val_"))}
    if checkpointer is not None:
        best = best_from_checkpointer(checkpointer, state.history)
        folder: Path | None = checkpointer.directory
    else:
        best, folder = best_from_history(state.history), None
    out = {
        "name": cfg.run.name,
        "run_dir": str(run_dir) if run_dir else None,
        "global_step": state.global_step,
        "epochs_completed": state.epochs_completed,
        "stop_reason": state.stop_reason,
        "final": final,
        "best": best,
        "checkpoints": checkpoints_on_disk(folder),
        "data": data_info,
        "model": {
            "name": cfg.model.name,
            "args": cfg.model.args,
            "parameters": sum(p.numel() for p in model.parameters()),
            "batchnorm": any(
                isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
            ),
        },
        "seed": cfg.run.seed,
        "device": str(device),
        "timings": timings,
        "versions": versions(),
        "command": " ".join(sys.argv),
    }
    if checkpointer is not None and checkpointer.failures:
        out["checkpoint_failures"] = list(checkpointer.failures)
    if resumed_from is not None:
        out["resumed_from"] = resumed_from
    if error is not None and not isinstance(error, KeyboardInterrupt):  # Ctrl-C: "interrupted"
        out["error"] = f"{type(error).__name__}: {first_line(error)}"
    out.update(extra or {})
    return out
