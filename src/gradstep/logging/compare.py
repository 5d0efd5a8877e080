"""``gradstep compare RUN_DIR RUN_DIR ...``: runs side by side — one figure, one table.

:func:`compare_runs` overlays the runs' curves in one figure (loss per epoch, train dashed and
validation solid, and accuracy — or MAE — per epoch, one colour per run) and returns a table of
each run's final and best metrics, which the command prints (a rich table on a terminal, plain
text otherwise).

Example::

    from gradstep.logging.compare import compare_runs
    png, table = compare_runs(["runs/bn", "runs/no-bn"], "compare.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradstep.diagnose import read_run
from gradstep.errors import UserError
from gradstep.logging.console import format_value
from gradstep.logging.plots import _figure, _finish, _save, _xy

COLUMNS = (
    "run",
    "epochs",
    "steps",
    "final train_loss",
    "final val_loss",
    "final val metric",
    "best",
    "wall time",
)


def _labels(runs: list[Path]) -> list[str]:
    names = [r.name for r in runs]
    return [f"{r.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def _row(label: str, history: list[dict], summary: dict[str, Any]) -> dict[str, str]:
    last = history[-1] if history else {}
    best = summary.get("best") or {}

    metric = next(
        (m for m in ("val_acc", "val_mae", "train_acc", "train_mae") if m in last), "train_acc"
    )
    best_text = "—"
    if best.get("value") is not None:
        monitor = str(best.get("monitor"))
        best_text = f"{monitor} {format_value(monitor, best['value'])}"
        if best.get("epoch") is not None:
            best_text += f" (epoch {best['epoch']})"
    wall = (summary.get("timings") or {}).get("wall_time_s")
    return {
        "run": label,
        "epochs": str(summary.get("epochs_completed", len(history))),
        "steps": str(summary.get("global_step", last.get("step", "—"))),
        "final train_loss": format_value("train_loss", last.get("train_loss")),
        "final val_loss": format_value("val_loss", last.get("val_loss")),
        "final val metric": f"{metric} {format_value(metric, last.get(metric))}",
        "best": best_text,
        "wall time": f"{wall:.1f} s" if isinstance(wall, int | float) else "—",
    }


def compare_runs(run_dirs: list[str | Path], out: str | Path) -> tuple[Path, list[dict[str, str]]]:
    """Write the overlay figure to ``out``; return its path and one table row per run."""
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise UserError("compare: give at least two run directories")
    loaded = [read_run(r) for r in runs]  # a clear error names a folder that is not a run
    labels = _labels(runs)
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    fig, (loss_ax, metric_ax) = _figure(2)
    drawn_loss = drawn_metric = False
    metric = "acc"
    for i, (label, (history, _, _, _)) in enumerate(zip(labels, loaded, strict=True)):
        color = colors[i % len(colors)]
        if any("train_mae" in h for h in history):
            metric = "mae"
        xs, ys = _xy(history, "epoch", "train_loss")
        if xs:
            loss_ax.plot(xs, ys, color=color, linestyle="--", label=f"{label} train")
            drawn_loss = True
        xs, ys = _xy(history, "epoch", "val_loss")
        if xs:
            loss_ax.plot(xs, ys, color=color, label=f"{label} validation")
            drawn_loss = True
        key = f"val_{metric}" if any(f"val_{metric}" in h for h in history) else f"train_{metric}"
        xs, ys = _xy(history, "epoch", key)
        if xs:
            metric_ax.plot(xs, ys, color=color, label=f"{label} {key}")
            drawn_metric = True
    _finish(loss_ax, "loss per epoch (dashed: train)", "epoch", "loss", drawn_loss)
    label = "accuracy" if metric == "acc" else "mean absolute error"
    _finish(metric_ax, f"{label} per epoch", "epoch", label, drawn_metric)
    path = _save(fig, Path(out))  # an unwritable place is a one-line UserError
    rows = [_row(lb, h, s) for lb, (h, _, s, _) in zip(labels, loaded, strict=True)]
    return path, rows
