"""Pictures of a run: did it learn, did it overfit, was it stable.

:func:`write_plots` reads a run directory (``metrics.jsonl``, ``summary.json``, ``config.toml``)
and writes PNGs into ``runs/<name>/plots/``:

* ``loss.png`` — train and validation loss per epoch (left) and per step (right: each progress
  line's loss, and each validation);
* ``accuracy.png`` (``mae.png`` for regression) — train against validation per epoch;
* ``lr.png`` — the learning rate per step (per epoch when no step line was logged);
* ``grad_norm.png`` — the gradient norm at each progress line (log scale; each epoch's mean and
  largest when no epoch had a progress line), with the
  ``[health]`` thresholds, the step where exploding or vanishing gradients began, and the step
  of the chosen ("best") checkpoint marked, when those exist.

Each is titled with the run's name and has labelled axes. ``Trainer.fit`` writes them at the end
(``[log] plots = true``, the default) and ``gradstep report`` writes them again. Matplotlib is
used through its object API (``Figure``), so no GUI backend and no global pyplot state.

Example::

    from gradstep.logging.plots import write_plots
    write_plots("runs/mnist_simplenet")   # [Path('runs/mnist_simplenet/plots/loss.png'), ...]
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradstep.diagnose import read_metrics
from gradstep.errors import UserError
from gradstep.rundir import write_atomic

TRAIN, VAL, MARK = "#1f77b4", "#d62728", "#2ca02c"


def _xy(records: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(y)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r[x])
            ys.append(float(v))
    return xs, ys


def _figure(ncols: int = 1) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * ncols, 3.8), dpi=100)
    # fixed margins, not layout="constrained": that solver was a third of the plotting time
    # (the end of every fit); these fit the labels the plots draw (ticks like 1e-05, titles)
    fig.subplots_adjust(
        left=0.14 / ncols, right=1 - 0.03 / ncols, bottom=0.13, top=0.91, wspace=0.3
    )
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    try:
        write_atomic(path, buf.getvalue(), sync=False)  # rebuilt by `gradstep report`
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror or err}") from None
    return path


def _line(ax: Any, xs: list[float], ys: list[float], label: str, color: str, **kw: Any) -> bool:
    if not xs:
        return False
    marker = "o" if len(xs) <= 30 else None
    ax.plot(xs, ys, label=label, color=color, marker=marker, markersize=3, **kw)
    return True


def _finish(ax: Any, title: str, xlabel: str, ylabel: str, drawn: bool) -> None:
    ax.set_title(title, y=1.0, pad=6)  # a fixed place: no tick-label bounding boxes to measure
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)


def plot_loss(name: str, rec: dict[str, list], path: Path) -> Path:
    fig, (by_epoch, by_step) = _figure(2)
    drawn = _line(by_epoch, *_xy(rec["epoch"], "epoch", "train_loss"), "train", TRAIN)
    drawn |= _line(by_epoch, *_xy(rec["epoch"], "epoch", "val_loss"), "validation", VAL)
    _finish(by_epoch, f"{name}: loss per epoch", "epoch", "loss", drawn)
    drawn = _line(by_step, *_xy(rec["step"], "step", "loss"), "train (progress lines)", TRAIN)
    drawn |= _line(by_step, *_xy(rec["val"], "step", "val_loss"), "validation", VAL)
    _finish(by_step, f"{name}: loss per step", "optimizer step", "loss", drawn)
    return _save(fig, path)


def plot_metric(name: str, rec: dict[str, list], metric: str, path: Path) -> Path:
    fig, (ax,) = _figure()
    drawn = _line(ax, *_xy(rec["epoch"], "epoch", f"train_{metric}"), "train", TRAIN)
    drawn |= _line(ax, *_xy(rec["epoch"], "epoch", f"val_{metric}"), "validation", VAL)
    label = "accuracy" if metric == "acc" else "mean absolute error"
    _finish(ax, f"{name}: {label}", "epoch", label, drawn)
    if metric == "acc" and drawn:
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    return _save(fig, path)


def plot_lr(name: str, rec: dict[str, list], path: Path) -> Path:
    fig, (ax,) = _figure()
    if rec["step"]:
        drawn = _line(ax, *_xy(rec["step"], "step", "lr"), "lr at each progress line", TRAIN)
        xlabel = "optimizer step"
    else:
        drawn = _line(ax, *_xy(rec["epoch"], "epoch", "lr"), "lr of each epoch", TRAIN)
        xlabel = "epoch"
    _finish(ax, f"{name}: learning rate", xlabel, "learning rate", drawn)
    return _save(fig, path)


def plot_grad_norm(
    name: str, rec: dict[str, list], summary: dict[str, Any], config: dict[str, Any], path: Path
) -> Path:
    fig, (ax,) = _figure()
    xs, ys = _xy(rec["step"], "step", "grad_norm")
    by_step = bool(xs)
    if by_step:
        drawn = _line(ax, xs, ys, "gradient L2 norm (before clipping)", TRAIN)
    else:  # no progress line in any epoch (log_every > steps per epoch): the epochs' norms
        xs, ys = _xy(rec["epoch"], "epoch", "grad_norm")
        drawn = _line(ax, xs, ys, "mean over the epoch's steps", TRAIN)
        hx, hy = _xy(rec["epoch"], "epoch", "grad_norm_max")
        drawn |= _line(ax, hx, hy, "largest in the epoch", VAL, linestyle="--")
    health = summary.get("health") or {}
    limits = config.get("health", {})
    if drawn:
        ax.set_yscale("log")
        low, high = min(ys), max(ys)
        explode = limits.get("explode_norm")
        if isinstance(explode, int | float):
            ax.axhline(explode, color=VAL, linestyle="--", label=f"explode_norm {explode:g}")
        vanish = limits.get("vanish_norm")
        if isinstance(vanish, int | float) and vanish > 0 and vanish > low / 1e3:
            ax.axhline(vanish, color="#9467bd", linestyle="--", label=f"vanish_norm {vanish:g}")
        for kind, color in (("exploding", VAL), ("vanishing", "#9467bd")):
            event = health.get(kind)
            if event and by_step:
                ax.axvline(event["step"], color=color, linestyle=":", label=f"{kind} from here")
        best = summary.get("best") or {}
        where = best.get("step") if by_step else best.get("epoch")
        if best.get("checkpoint") and where is not None:
            ax.axvline(where, color=MARK, linestyle="-.", label="chosen checkpoint")
        clip = config.get("train", {}).get("clip_norm")
        if isinstance(clip, int | float) and low / 10 < clip < high * 10:
            ax.axhline(clip, color="gray", linestyle="--", label=f"clip_norm {clip:g}")
    xlabel = "optimizer step" if by_step else "epoch"
    _finish(ax, f"{name}: gradient norm", xlabel, "global L2 norm", drawn)
    return _save(fig, path)


def write_plots_or_warn(run_dir: Path, warn: Callable[[str], None]) -> None:
    """:func:`write_plots` at the end of fit: a plotting problem is a warning, never a lost
    run."""
    try:
        write_plots(run_dir)
    except Exception as err:
        warn(f"plots not written: {type(err).__name__}: {err}")


def write_plots(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the run's plots (see the module docstring); return their paths."""
    from gradstep.diagnose import read_run

    run = Path(run_dir)
    _, _, summary, config = read_run(run)  # checks it is a run directory
    rec = read_metrics(run / "metrics.jsonl")
    out = Path(out_dir) if out_dir is not None else run / "plots"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the plots folder: {err.strerror or err}") from None
    name = summary.get("name") or run.name
    metric = "mae" if any("train_mae" in r for r in rec["epoch"]) else "acc"
    paths = [
        plot_loss(name, rec, out / "loss.png"),
        plot_metric(name, rec, metric, out / f"{'accuracy' if metric == 'acc' else 'mae'}.png"),
        plot_lr(name, rec, out / "lr.png"),
    ]
    if any("grad_norm" in r for r in rec["step"] + rec["epoch"]):
        paths.append(plot_grad_norm(name, rec, summary, config, out / "grad_norm.png"))
    return paths
