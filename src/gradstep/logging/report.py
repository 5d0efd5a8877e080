"""``report.html``: one self-contained page about a run, readable offline.

:func:`write_report` (``gradstep report RUN_DIR``) writes the run's plots again
(:mod:`gradstep.logging.plots`) and a single HTML file holding:

* the run's name, model, data, how it stopped, and a table of its final and best metrics,
  steps, epochs and timings;
* the diagnosis (:mod:`gradstep.diagnose`): each verdict, its evidence and its suggestion;
* every plot, inline as a ``data:image/png;base64`` URI — no file beside it is needed;
* the resolved config.

The page has no external resource. A few lines of inline script check, once the page has
loaded, that every image decoded, and write the count at the bottom of the page (the test opens
it in headless Chromium and reads that line).

Example::

    from gradstep.logging.report import write_report
    write_report("runs/mnist_simplenet")   # Path('runs/mnist_simplenet/report.html')
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from gradstep.diagnose import Verdict, diagnose, read_run
from gradstep.errors import UserError
from gradstep.logging.console import format_value as _fmt
from gradstep.rundir import write_atomic

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }
th { background: #f4f4f4; }
.verdict { border-left: 4px solid #1f77b4; padding: 0.2em 1em; margin: 0.8em 0; }
.verdict.healthy { border-color: #2ca02c; } .verdict.overfitting, .verdict.unstable
{ border-color: #d62728; } .verdict.underfitting, .verdict.batchnorm { border-color: #ff7f0e; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
#image-check { color: #777; font-size: 0.9em; }
"""

CHECK = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  }
  var el = document.getElementById("image-check");
  el.textContent = "images decoded: " + ok + "/" + imgs.length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
});
"""


def _rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("stop reason", _fmt("", summary.get("stop_reason"))),
        ("epochs completed", _fmt("", summary.get("epochs_completed"))),
        ("optimizer steps", _fmt("", summary.get("global_step"))),
    ]
    for key, value in (summary.get("final") or {}).items():
        rows.append((f"final {key}", _fmt(key, value)))
    best = summary.get("best") or {}
    if best.get("value") is not None:
        where = f"step {best.get('step')}" + (
            f", epoch {best['epoch']}" if best.get("epoch") is not None else ""
        )
        rows.append(
            (f"best {best.get('monitor')}", f"{_fmt(best['monitor'], best['value'])} ({where})")
        )
    data = summary.get("data") or {}
    if data.get("effective_batch"):
        rows.append(("effective batch", _fmt("", data.get("effective_batch"))))
    timings = summary.get("timings") or {}
    if "wall_time_s" in timings:
        rows.append(("wall time", f"{timings['wall_time_s']:.2f} s"))
    if "samples_per_second" in timings:
        rows.append(("samples / s", f"{timings['samples_per_second']:,.0f}"))
    return rows


def _verdicts(summary: dict[str, Any], run: Path) -> list[Verdict]:
    stored = summary.get("diagnosis")
    if isinstance(stored, list) and stored:
        return [Verdict(**v) for v in stored]
    return diagnose(*read_run(run))


def render_report(run_dir: str | Path, plots: list[Path]) -> str:
    """The report's HTML for ``run_dir``, with ``plots`` inlined."""
    run = Path(run_dir)
    _, _, summary, _config = read_run(run)
    e = html.escape
    name = summary.get("name") or run.name
    model = summary.get("model") or {}
    data = summary.get("data") or {}
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>gradstep report: {e(name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(name)}</h1>",
        f'<p class="sub">{e(str(model.get("name", "")))} '
        f"({model.get('parameters', 0):,} parameters) on {e(str(data.get('description', '')))}"
        "</p>",
        "<h2>Summary</h2>",
        "<table>",
    ]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _rows(summary)]
    parts.append("</table>")
    parts.append("<h2>Diagnosis</h2>")
    for v in _verdicts(summary, run):
        parts.append(f'<div class="verdict {e(v.kind)}"><p><b>{e(v.title)}</b></p><ul>')
        parts += [f"<li>{e(item)}</li>" for item in v.evidence]
        parts.append("</ul>")
        if v.suggestion:
            parts.append(f"<p>Suggestion: {e(v.suggestion)}</p>")
        parts.append("</div>")
    parts.append("<h2>Plots</h2>")
    for path in plots:
        encoded = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f'<figure><img alt="{e(path.stem)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{e(path.stem.replace('_', ' '))}</figcaption></figure>"
        )
    config = run / "config.toml"
    if config.is_file():
        parts += ["<h2>Config</h2>", f"<pre>{e(config.read_text())}</pre>"]
    versions = summary.get("versions") or {}
    footer = ", ".join(f"{k} {v}" for k, v in versions.items())
    parts += [
        f"<p><small>{e(footer)}</small></p>",
        '<p id="image-check">images not checked (scripts off)</p>',
        f"<script>{CHECK}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the plots and ``report.html`` (or ``out``) for ``run_dir``; return the page's path."""
    from gradstep.logging.plots import write_plots

    run = Path(run_dir)
    read_run(run)  # a clear error for a folder that is not a run
    plots = write_plots(run)
    path = Path(out) if out is not None else run / "report.html"
    try:
        write_atomic(path, render_report(run, plots))
    except OSError as err:
        raise UserError(f"{path}: cannot write the report: {err.strerror or err}") from None
    return path
