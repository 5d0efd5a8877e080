"""What a person sees: the live bar on a terminal only, and the summary table."""

from __future__ import annotations

import io

from rich.console import Console

from gradstep.callbacks.progress_bar import ProgressBar
from gradstep.logging.console import ConsoleSink, print_summary
from gradstep.state import TrainState


def test_progress_bar_draws_on_a_terminal():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    bar = ProgressBar(console)
    bar.interval = 0.0  # hand every step to the bar (it throttles by time otherwise)
    state = TrainState(epochs=2, batches_per_epoch=10)
    bar.on_fit_start(state)
    state.epoch = 1
    bar.on_epoch_start(state)
    for i in range(1, 11):
        state.step_in_epoch = i
        bar.on_step_end(state)
    bar.progress.refresh()
    bar.on_epoch_end(state)
    bar.on_fit_end(state)
    assert "Epoch 1/2" in buf.getvalue() and "10/10" in buf.getvalue()


def test_no_bar_when_output_is_not_a_terminal(runs, capsys):
    import gradstep as gs

    gs.Trainer(source="random", n=64, epochs=1, run_dir=str(runs)).fit()
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "━" not in out  # no escape codes, no bar glyphs


def test_summary_is_a_table_on_a_terminal_and_plain_text_otherwise():
    summary = {
        "stop_reason": "completed",
        "epochs_completed": 3,
        "global_step": 30,
        "final": {"train_loss": 0.5, "val_acc": 0.9},
        "best": {"monitor": "val_loss", "value": 0.4, "epoch": 2},
        "timings": {"wall_time_s": 1.5, "samples_per_second": 1000.0},
    }
    term = io.StringIO()
    print_summary(Console(file=term, force_terminal=True, width=100), summary, "runs/x")
    assert "run summary" in term.getvalue() and "90.00%" in term.getvalue()
    plain = io.StringIO()
    print_summary(Console(file=plain, force_terminal=False, width=100), summary, "runs/x")
    assert plain.getvalue().startswith("Summary: stop reason completed, epochs completed 3")
    assert "\x1b[" not in plain.getvalue()


def test_progress_line_format():
    buf = io.StringIO()
    ConsoleSink(Console(file=buf, force_terminal=False)).write(
        {
            "kind": "step",
            "epoch": 2,
            "epochs": 5,
            "batch": 50,
            "batches": 313,
            "step": 363,
            "total_steps": 1565,
            "loss": 0.70581,
        }
    )
    assert buf.getvalue() == "Epoch [2/5], Batch [50/313], Step [363/1565], Loss: 0.7058\n"
