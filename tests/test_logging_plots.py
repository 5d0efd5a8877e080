"""Plots at the end of fit and from a run directory; compare; the end-of-fit table."""

from __future__ import annotations

import json

import pytest
from matplotlib.image import imread

import gradstep as gs
from gradstep.cli import main
from gradstep.logging.plots import write_plots


def _run(runs, name="a", **kw):
    settings = dict(
        source="random",
        n=120,
        epochs=3,
        batch_size=16,
        log_every=2,
        run_dir=str(runs),
        progress=False,
        name=name,
    )
    settings.update(kw)
    return gs.Trainer(**settings).fit()


def _is_png_picture(path) -> bool:
    img = imread(path)
    return img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0


def test_fit_writes_titled_plots_when_asked(runs):
    r = _run(runs, plots=True)
    names = sorted(p.name for p in (r.run_dir / "plots").glob("*.png"))
    assert names == ["accuracy.png", "grad_norm.png", "loss.png", "lr.png"]
    assert all(_is_png_picture(r.run_dir / "plots" / n) for n in names)


def test_no_plots_when_turned_off(runs):
    r = _run(runs, plots=False)
    assert not (r.run_dir / "plots").exists()


def test_regression_runs_plot_mae(runs):
    r = _run(runs, source="random", loss="mse", plots=False)
    paths = write_plots(r.run_dir)
    assert [p.name for p in paths][:3] == ["loss.png", "mae.png", "lr.png"]


def test_the_grad_norm_plot_marks_thresholds_and_the_chosen_checkpoint(runs, monkeypatch):
    drawn = {}
    import gradstep.logging.plots as plots

    real = plots._finish

    def spy(ax, title, xlabel, ylabel, ok):
        real(ax, title, xlabel, ylabel, ok)
        drawn[title.split(": ")[-1]] = [t.get_text() for t in ax.get_legend().get_texts()]

    monkeypatch.setattr(plots, "_finish", spy)
    r = _run(runs, explode_norm=50.0, clip_norm=1.0)
    write_plots(r.run_dir)
    legend = drawn["gradient norm"]
    assert any(t.startswith("explode_norm 50") for t in legend)
    assert "chosen checkpoint" in legend
    assert any(t.startswith("clip_norm 1") for t in legend)


def test_plots_of_a_folder_that_is_no_run_is_a_one_line_error(tmp_path):
    with pytest.raises(gs.UserError, match="not a run directory"):
        write_plots(tmp_path)


def test_compare_overlays_runs_and_prints_a_table(runs, tmp_path, capsys):
    a = _run(runs, name="small-lr", lr=1e-4).run_dir
    b = _run(runs, name="big-lr", lr=1e-2).run_dir
    out = tmp_path / "cmp.png"
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert _is_png_picture(out)
    summary_a = json.loads((a / "summary.json").read_text())
    assert "small-lr" in text and "big-lr" in text
    assert f"{summary_a['final']['train_loss']:.4g}" in text


def test_compare_needs_two_runs_and_real_run_dirs(runs, tmp_path, capsys):
    a = _run(runs).run_dir
    assert main(["compare", str(a)]) == 2
    assert main(["compare", str(a), str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_the_summary_is_plain_text_when_not_a_terminal(runs, capsys):
    _run(runs)
    out = capsys.readouterr().out
    assert "Summary: stop reason completed" in out
    assert "┃" not in out and "│" not in out


def test_without_progress_lines_the_grad_norm_plot_uses_the_epochs(runs):
    r = _run(runs, log_every=1000, plots=True)  # 7 steps an epoch: no progress line at all
    assert (r.run_dir / "plots" / "grad_norm.png").is_file()
    assert _is_png_picture(r.run_dir / "plots" / "grad_norm.png")
