"""A full disk while logging, writing the summary or resuming: one line naming the path, exit 1,
the summary written where the disk allows it (else said so), the previous checkpoint loadable.

A full disk is real here: the run's open log file is pointed at ``/dev/full`` (every write to it
fails with ENOSPC), or the one write under test raises the ENOSPC a full disk gives.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import sys
from pathlib import Path

import pytest

import gradstep as gs
import gradstep.trainer
from gradstep.callbacks import MetricsLogger
from gradstep.checkpoint.files import SaveError
from gradstep.cli import main
from gradstep.logging.jsonl import JsonlSink
from gradstep.logging.tensorboard import TensorBoardSink
from gradstep.state import TrainState

SETTINGS = [
    "data.source=random",
    "data.n=80",
    "train.epochs=3",
    "train.batch_size=16",
    "train.progress=false",
]
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"

needs_proc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/dev/full"),
    reason="needs /proc/self/fd and /dev/full",
)


class DiskFillsUp(gs.Callback):
    """At the end of epoch ``at``, the disk under the run's open files named like ``pattern``
    fills up: their descriptors are pointed at ``/dev/full``, so every later write fails."""

    def __init__(self, under: Path, pattern: str, at: int = 1) -> None:
        self.under, self.pattern, self.at = str(under), pattern, at

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch != self.at:
            return
        full = os.open("/dev/full", os.O_WRONLY)
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(self.under) and fnmatch.fnmatch(Path(target).name, self.pattern):
                os.dup2(full, int(fd))
        os.close(full)


def with_callback(monkeypatch, callback: gs.Callback) -> None:
    """Every Trainer the command line builds gets ``callback`` too."""
    real = gs.Trainer.__init__

    def init(self, config=None, *, callbacks=(), **settings):
        real(self, config, callbacks=[*callbacks, callback], **settings)

    monkeypatch.setattr(gs.Trainer, "__init__", init)


def full_disk_for(monkeypatch, name: str) -> None:
    """``write_json`` / ``write_atomic`` of a file called ``name`` fails as on a full disk (the
    flush of its temporary file: an ENOSPC that names no file)."""
    import gradstep.rundir

    real = gradstep.rundir.write_atomic

    def write_atomic(path, text):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, ENOSPC)
        real(path, text)

    monkeypatch.setattr(gradstep.rundir, "write_atomic", write_atomic)
    monkeypatch.setattr(gradstep.trainer, "write_atomic", write_atomic)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gradstep: error: ")
    return lines[0]


def the_run(parent: Path) -> Path:
    (run,) = parent.iterdir()
    return run


@needs_proc
@pytest.mark.parametrize("pattern", ["metrics.jsonl", "events.out.tfevents.*"])
def test_a_full_disk_under_a_log_file_stops_the_run_in_one_line_and_writes_the_summary(
    tmp_path, monkeypatch, capsys, pattern
):
    with_callback(monkeypatch, DiskFillsUp(tmp_path, pattern))
    code = main(["fit", "--set", f"run.dir={tmp_path}", *(f"--set={s}" for s in SETTINGS)])
    assert code == 1
    line = one_error_line(capsys)
    run = the_run(tmp_path)
    logged = next(run.glob(pattern))
    assert f"cannot write {logged}: {ENOSPC}; the run stopped at step 8" in line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "error"
    assert summary["error"] == f"SaveError: {line.removeprefix('gradstep: error: ')}"
    assert summary["epochs_completed"] == 1 and summary["checkpoints"] == ["step-000004"]
    gs.load_model(run)  # the previous checkpoint: complete and loadable
    # and resumable, once there is room again
    capsys.readouterr()
    monkeypatch.undo()
    assert main(["resume", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["global_step"] == 12
    steps = [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 4, 8, 8, 12, 12]  # val and epoch lines, each once


def fit_exits_1(tmp_path: Path, capsys) -> tuple[str, Path]:
    """``gradstep fit`` of the test settings: exit 1, and its one error line and run dir."""
    code = main(["fit", "--set", f"run.dir={tmp_path}", *(f"--set={s}" for s in SETTINGS)])
    assert code == 1
    return one_error_line(capsys), the_run(tmp_path)


@needs_proc
def test_a_summary_the_full_disk_refuses_too_is_said_after_the_cause(tmp_path, monkeypatch, capsys):
    with_callback(monkeypatch, DiskFillsUp(tmp_path, "metrics.jsonl"))
    full_disk_for(monkeypatch, "summary.json")
    line, run = fit_exits_1(tmp_path, capsys)
    assert line == (
        f"gradstep: error: cannot write {run / 'metrics.jsonl'}: {ENOSPC}; the run stopped at "
        f"step 8; summary.json not written either ({ENOSPC})"
    )
    assert not (run / "summary.json").exists()
    gs.load_model(run)


def test_a_summary_the_disk_refuses_after_a_good_run_is_one_line_exit_1(
    tmp_path, monkeypatch, capsys
):
    full_disk_for(monkeypatch, "summary.json")
    line, run = fit_exits_1(tmp_path, capsys)
    assert line == (
        f"gradstep: error: cannot write {run / 'summary.json'}: {ENOSPC}; the run itself ended "
        "(completed, step 12)"
    )
    gs.load_model(run)
    # the Python API raises the same SaveError
    with pytest.raises(SaveError, match="summary.json: No space left on device"):
        gs.Trainer(run_dir=str(tmp_path), source="random", n=80, epochs=1, progress=False).fit()


def test_a_full_disk_at_resume_is_one_line_and_the_run_stays_resumable(
    tmp_path, monkeypatch, capsys
):
    assert main(["fit", "--set", f"run.dir={tmp_path}", *(f"--set={s}" for s in SETTINGS)]) == 0
    run = the_run(tmp_path)
    config = (run / "config.toml").read_text()
    capsys.readouterr()
    full_disk_for(monkeypatch, "config.toml")
    assert main(["resume", str(run), "--set", "train.epochs=4"]) == 1
    line = one_error_line(capsys)
    assert line == f"gradstep: error: cannot write {run / 'config.toml'}: {ENOSPC}"
    assert (run / "config.toml").read_text() == config  # untouched
    gs.load_model(run)
    monkeypatch.undo()
    assert main(["resume", str(run), "--set", "train.epochs=4"]) == 0
    assert json.loads((run / "summary.json").read_text())["global_step"] == 16


def test_a_full_disk_at_the_start_of_a_run_is_one_line(tmp_path, monkeypatch, capsys):
    full_disk_for(monkeypatch, "config.toml")
    code = main(["fit", "--set", f"run.dir={tmp_path}", *(f"--set={s}" for s in SETTINGS)])
    assert code == 1
    line = one_error_line(capsys)
    assert line == (
        f"gradstep: error: cannot write config.toml of the new run mlp-random in {tmp_path}: "
        f"{ENOSPC}"
    )


def test_a_log_file_that_cannot_be_opened_stops_the_run_before_it_starts(tmp_path):
    (tmp_path / "run").mkdir()
    jsonl = JsonlSink(tmp_path / "run" / "metrics.jsonl")
    logger = MetricsLogger([jsonl, TensorBoardSink(tmp_path / "gone")])
    with pytest.raises(SaveError) as exc:
        logger.on_fit_start(TrainState(epochs=1, batches_per_epoch=1))
    assert str(exc.value).startswith(f"cannot write {tmp_path / 'gone'}/events.out.tfevents.")
    assert str(exc.value).endswith(": No such file or directory; the run stopped at step 0")
    assert jsonl._f is None  # closed: the loop calls no on_exception for a failed start


@needs_proc
@pytest.mark.parametrize("make", [JsonlSink, TensorBoardSink], ids=["jsonl", "tensorboard"])
def test_a_sink_whose_write_failed_is_closed_and_never_raises_again(tmp_path, make):
    sink = make(tmp_path / "metrics.jsonl") if make is JsonlSink else make(tmp_path)
    sink.open(None)
    record = {"kind": "epoch", "step": 1, "epoch": 1, "train_loss": 0.5}
    sink.write(record)
    DiskFillsUp(tmp_path, "*").on_epoch_end(TrainState(epochs=1, batches_per_epoch=1, epoch=1))
    with pytest.raises(OSError) as exc:
        sink.write(record)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename.startswith(str(tmp_path))
    sink.close()  # nothing left to flush, nothing raised: no second error over the first
    sink.close()
