"""``gradstep lab NAME``: the textbook experiments, run end to end, each with a plot and a table.

``gradstep lab`` lists them. Each trains with :class:`gradstep.Trainer` (so every run is an
ordinary run directory under ``<out>/runs/``, with metrics, summary and checkpoints off), then
writes ``<out>/<name>.png`` and ``<out>/<name>.md`` (the table, in Markdown) and prints the table.
The default ``<out>`` is ``runs/lab-<name>``.

* ``batchnorm`` — BatchNorm against none: ``make_circles(n_samples=2000, noise=0.1, factor=0.4,
  random_state=42)``, a 70/30 split (``random_state=42``), a 2-64-32-2 MLP with and without
  ``BatchNorm1d`` after each hidden ``Linear``, full-batch SGD lr 0.1 for 500 epochs: train loss
  and test accuracy per epoch for both.
* ``gd-variants`` — SGD (batch 1), mini-batch (32) and batch GD (the full set) on the same data
  and epochs: loss against epochs and against wall time, and how many updates each made.
* ``accumulation`` — batch 32 against batch 8 × accumulate 4: the same updates, so the same
  curves and (up to float rounding) the same weights.
* ``lr-schedules`` — one model under a constant rate, a step schedule and a cosine schedule.

Example::

    from gradstep.lab import run_lab
    table = run_lab("batchnorm", "runs/lab-batchnorm")   # rows: model, final test accuracy, ...
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradstep.errors import UserError, did_you_mean
from gradstep.logging.console import format_value


def circles() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The textbook circles and their 70/30 split (both seeded 42)."""
    from sklearn.datasets import make_circles
    from sklearn.model_selection import train_test_split

    x, y = make_circles(n_samples=2000, noise=0.1, factor=0.4, random_state=42)
    xtr, xte, ytr, yte = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=42)
    return (xtr, ytr), (xte, yte)


class CirclesMLP(nn.Module):
    """2-64-32-2, optionally with ``BatchNorm1d`` after each hidden ``Linear``."""

    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in ((2, 64), (64, 32)):
            layers.append(nn.Linear(n_in, n_out))
            if batchnorm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(32, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class Run:
    label: str
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    model: nn.Module
    seconds: float


def _train(out: Path, label: str, model: nn.Module, data: Any, **settings: Any) -> Run:
    """One quiet ``Trainer.fit`` (its lines go nowhere; the lab prints its own)."""
    from gradstep.trainer import Trainer

    base = dict(
        run_dir=str(out / "runs"),
        name=label,
        normalize=False,
        checkpoint_every="never",
        progress=False,
        plots=False,
        print_diagnosis=False,
        log_every=10_000,
        device="cpu",
        seed=42,
    )
    base.update(settings)
    (train, val) = data
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = Trainer(**base).fit(model, train=train, val=val)
    return Run(label, result.history, result.summary, result.model, time.perf_counter() - started)


def _seeded(factory: Callable[[], nn.Module], seed: int = 42) -> nn.Module:
    torch.manual_seed(seed)
    return factory()


def _curves(out: Path, name: str, runs: list[Run], panels: list[tuple[str, str, str]]) -> Path:
    """One panel per ``(x key, y key, title)``; x "wall" is cumulative epoch time."""
    from gradstep.logging.plots import _figure, _finish, _save

    fig, axes = _figure(len(panels))
    for ax, (x_key, y_key, title) in zip(axes, panels, strict=True):
        for run in runs:
            ys = [h.get(y_key) for h in run.history]
            if x_key == "wall":
                xs = list(np.cumsum([h["time_s"] for h in run.history]))
            else:
                xs = [h[x_key] for h in run.history]
            ax.plot(xs, ys, label=run.label)
        xlabel = {"wall": "wall time (s)", "epoch": "epoch", "step": "optimizer step"}[x_key]
        ylabel = y_key.replace("val_acc", "test accuracy").replace("train_loss", "train loss")
        _finish(ax, title, xlabel, ylabel, True)
        if y_key.endswith("_acc"):
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    return _save(fig, out / f"{name}.png")


def _row(run: Run, first: str, **extra: str) -> dict[str, str]:
    """A table row: ``first`` (the column naming the setup), then ``extra`` columns around the
    final train loss and test accuracy every experiment reports."""
    last = run.history[-1]
    row = {first: run.label, **extra}
    row["final train loss"] = format_value("loss", last["train_loss"])
    row["final test accuracy"] = format_value("acc", last.get("val_acc"))
    return row


def _best_acc(run: Run) -> str:
    scored = [h for h in run.history if isinstance(h.get("val_acc"), float)]
    if not scored:
        return "—"
    best = max(scored, key=lambda h: h["val_acc"])
    return f"{best['val_acc']:.2%} (epoch {best['epoch']})"


# --- the experiments -------------------------------------------------------------------------


def lab_batchnorm(out: Path) -> list[dict[str, str]]:
    data = circles()
    runs = [
        _train(
            out,
            label,
            _seeded(lambda bn=bn: CirclesMLP(bn)),
            data,
            epochs=500,
            batch_size="full",
            optimizer="sgd",
            lr=0.1,
        )
        for label, bn in (("with BatchNorm", True), ("without BatchNorm", False))
    ]
    _curves(
        out,
        "batchnorm",
        runs,
        [
            ("epoch", "train_loss", "train loss (full-batch SGD, lr 0.1)"),
            ("epoch", "val_acc", "test accuracy"),
        ],
    )
    return [
        {
            **_row(run, "model"),
            "best test accuracy": _best_acc(run),
            "epochs": str(len(run.history)),
            "time": f"{run.seconds:.1f} s",
        }
        for run in runs
    ]


def lab_gd_variants(out: Path) -> list[dict[str, str]]:
    data = circles()
    runs = [
        _train(
            out,
            label,
            _seeded(CirclesMLP),
            data,
            epochs=15,
            batch_size=bs,
            optimizer="sgd",
            lr=0.05,
        )
        for label, bs in (
            ("SGD (batch 1)", 1),
            ("mini-batch (32)", 32),
            ("batch GD (full)", "full"),
        )
    ]
    _curves(
        out,
        "gd-variants",
        runs,
        [
            ("epoch", "train_loss", "train loss per epoch"),
            ("wall", "train_loss", "train loss against wall time"),
        ],
    )
    return [
        {
            **_row(run, "method", **{"updates made": str(run.summary["global_step"])}),
            "train time": f"{sum(h['time_s'] for h in run.history):.1f} s",
        }
        for run in runs
    ]


def lab_accumulation(out: Path) -> list[dict[str, str]]:
    data = circles()
    # plain SGD: with momentum 0.9 at lr 0.1 the two runs' float rounding (a sum of 32 against
    # four weighted sums of 8) is amplified over hundreds of steps, chaotically, to ~1e-2
    common = dict(epochs=20, optimizer="sgd", lr=0.1)
    big = _train(out, "batch 32", _seeded(CirclesMLP), data, batch_size=32, **common)
    acc = _train(
        out,
        "batch 8 x accumulate 4",
        _seeded(CirclesMLP),
        data,
        batch_size=8,
        accumulate=4,
        **common,
    )
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(big.model.parameters(), acc.model.parameters(), strict=True)
    )
    _curves(
        out,
        "accumulation",
        [big, acc],
        [
            ("epoch", "train_loss", "train loss per epoch"),
            ("epoch", "val_acc", "test accuracy"),
        ],
    )
    return [
        {
            **_row(
                run,
                "setup",
                **{
                    "updates made": str(run.summary["global_step"]),
                    "effective batch": str(run.summary["data"]["effective_batch"]),
                },
            ),
            "max |weight difference|": f"{diff:.2e}",
        }
        for run in (big, acc)
    ]


def lab_lr_schedules(out: Path) -> list[dict[str, str]]:
    data = circles()
    schedules = (
        ("constant", {}),
        ("step (x0.5 every 10 epochs)", {"schedule": "step", "step_size": 10, "gamma": 0.5}),
        ("cosine", {"schedule": "cosine"}),
    )
    runs = [
        _train(
            out,
            label,
            _seeded(CirclesMLP),
            data,
            epochs=40,
            batch_size=32,
            optimizer="sgd",
            lr=0.1,
            **extra,
        )
        for label, extra in schedules
    ]
    _curves(
        out,
        "lr-schedules",
        runs,
        [
            ("epoch", "lr", "learning rate"),
            ("epoch", "train_loss", "train loss per epoch"),
        ],
    )
    return [_row(run, "schedule", **{"final lr": f"{run.history[-1]['lr']:.4g}"}) for run in runs]


@dataclass
class Experiment:
    name: str
    about: str
    run: Callable[[Path], list[dict[str, str]]]


EXPERIMENTS = {
    e.name: e
    for e in (
        Experiment(
            "batchnorm",
            "BatchNorm vs none: circles, 2-64-32-2 MLP, full-batch SGD, 500 epochs",
            lab_batchnorm,
        ),
        Experiment(
            "gd-variants",
            "SGD (batch 1) vs mini-batch (32) vs batch GD: loss per "
            "epoch and per second, updates made",
            lab_gd_variants,
        ),
        Experiment(
            "accumulation", "batch 32 vs batch 8 x accumulate 4: the same updates", lab_accumulation
        ),
        Experiment(
            "lr-schedules",
            "constant vs step vs cosine learning rate on one model",
            lab_lr_schedules,
        ),
    )
}


def markdown_table(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_lab(name: str, out: str | Path | None = None) -> list[dict[str, str]]:
    """Run experiment ``name``; write ``<out>/<name>.png`` and ``<out>/<name>.md``; return the
    table's rows."""
    if name not in EXPERIMENTS:
        raise UserError(
            f"lab: no experiment {name!r}{did_you_mean(name, EXPERIMENTS)}; "
            f"there are {', '.join(EXPERIMENTS)}"
        )
    folder = Path(out) if out is not None else Path("runs") / f"lab-{name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the lab folder: {err.strerror or err}") from None
    rows = EXPERIMENTS[name].run(folder)
    from gradstep.rundir import write_atomic

    write_atomic(folder / f"{name}.md", f"# gradstep lab {name}\n\n" + markdown_table(rows))
    return rows
