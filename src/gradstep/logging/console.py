"""What a person reads: the classic progress line, a line per epoch, and the end-of-run summary.

``Epoch [2/5], Batch [50/313], Step [363/1565], Loss: 0.7058`` — the line every PyTorch tutorial
prints, so people recognise it. Text goes through a rich ``Console``, which draws tables and
colour on a terminal and plain text otherwise.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from gradstep.logging.base import Sink


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)


def format_value(key: str, v: Any) -> str:
    """A value as tables show it (report, compare, lab): accuracies (``*acc``) as percentages,
    other floats to four significant figures, a missing value as a dash."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2%}" if key.endswith("acc") else f"{v:.4g}"
    return str(v)


def metric_text(metrics: dict[str, Any], prefix: str) -> list[str]:
    out = []
    for key in ("loss", "acc", "mae"):
        v = metrics.get(f"{prefix}_{key}")
        if v is None:
            continue
        out.append(f"{prefix}_{key} {v:.2%}" if key == "acc" else f"{prefix}_{key} {_fmt(v)}")
    return out


class ConsoleSink(Sink):
    def __init__(self, console: Console) -> None:
        self.console = console

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def write(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "step":
            self._print(
                f"Epoch [{record['epoch']}/{record['epochs']}], "
                f"Batch [{record['batch']}/{record['batches']}], "
                f"Step [{record['step']}/{record['total_steps']}], Loss: {record['loss']:.4f}"
            )
        elif kind == "epoch":
            parts = metric_text(record, "train") + metric_text(record, "val")
            partial = " (partial)" if record.get("partial") else ""
            self._print(
                f"Epoch [{record['epoch']}/{record['epochs']}]{partial} done in "
                f"{record['time_s']:.2f}s: " + ", ".join(parts) + f", lr {record['lr']:g}"
            )


def print_summary(console: Console, summary: dict[str, Any], run_dir: str) -> None:
    """The end-of-run summary: a table on a terminal, plain lines otherwise."""
    final = summary.get("final", {})
    best = summary.get("best") or {}
    t = summary["timings"]
    rows = [
        ("stop reason", str(summary["stop_reason"])),
        ("epochs completed", str(summary["epochs_completed"])),
        ("optimizer steps", str(summary["global_step"])),
        *[(k, f"{v:.2%}" if k.endswith("_acc") else _fmt(v)) for k, v in final.items()],
    ]
    if best.get("value") is not None:
        at = f"epoch {best['epoch']}" if best.get("epoch") is not None else f"step {best['step']}"
        rows.append((f"best {best['monitor']}", f"{_fmt(best['value'])} ({at})"))
    rows += [
        ("wall time", f"{t['wall_time_s']:.2f}s"),
        ("samples/s", f"{t['samples_per_second']:,.0f}"),
        ("run directory", run_dir),
    ]
    if console.is_terminal:
        table = Table(title="gradstep: run summary", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for k, v in rows:
            table.add_row(k, v)
        console.print(table)
    else:
        console.print(
            "Summary: " + ", ".join(f"{k} {v}" for k, v in rows[:-1]),
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        console.print(f"Run directory: {run_dir}", soft_wrap=True, markup=False, highlight=False)


def print_table(console: Console, title: str, rows: list[dict[str, str]]) -> None:
    """Rows of equal keys: a rich table on a terminal, aligned plain text otherwise."""
    if not rows:
        return
    cols = list(rows[0])
    if console.is_terminal:
        table = Table(title=title)
        for c in cols:
            table.add_column(c)
        for r in rows:
            table.add_row(*(r[c] for c in cols))
        console.print(table)
        return
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(r[c].ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    for line in lines:
        console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)
