"""TensorBoard scalars, written with TensorBoard's records, read back with TensorBoard's own reader
(which checks every record's CRC)."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import gradstep as gs
from gradstep.logging.tensorboard import TensorBoardSink

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
event_file_loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")


def _scalars(run_dir):
    ea = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _events(path: Path) -> list:
    """Every event of one file, in order, as TensorBoard's loader reads (and CRC-checks) them."""
    return list(event_file_loader.LegacyEventFileLoader(str(path)).Load())


def test_importing_gradstep_leaves_tensorboard_unimported():
    # TensorBoard is imported at the first write (fit start), not with gradstep
    code = (
        "import sys, gradstep, gradstep.logging.tensorboard\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'tensorboard'"
        " or m.startswith('torch.utils.tensorboard')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_event_file_is_a_file_version_then_one_event_per_record(tmp_path):
    sink = TensorBoardSink(tmp_path)
    sink.open(None)
    sink.write({"kind": "step", "step": 1, "epoch": 1, "batch": 1, "loss": 0.5, "lr": 0.1})
    sink.write({"kind": "val", "step": 1, "epoch": 1, "val_loss": 0.4, "val_acc": 0.75})
    sink.write({"kind": "step", "step": 2, "epoch": 1, "partial": True})  # nothing to plot
    sink.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    events = _events(path)
    assert [e.WhichOneof("what") for e in events] == ["file_version", "summary", "summary"]
    assert events[0].file_version == "brain.Event:2"
    assert [(v.tag, v.simple_value) for v in events[1].summary.value] == [
        ("train/loss", 0.5),
        ("train/lr", pytest.approx(0.1)),
    ]
    assert [v.tag for v in events[2].summary.value] == ["val/loss", "val/acc"]
    assert [e.step for e in events] == [0, 1, 1]


def test_a_resumed_sink_starts_its_file_with_the_purge_step(tmp_path):
    sink = TensorBoardSink(tmp_path, resumed_step=10)
    sink.open(None)
    sink.close()
    sink.close()  # once closed, closing again does nothing
    (path,) = tmp_path.glob("events.out.tfevents.*")
    first, start = _events(path)
    assert first.file_version == "brain.Event:2"
    assert start.step == 11 and start.session_log.status == start.session_log.START


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_process_leaves_every_event_it_wrote_readable(tmp_path):
    # no close, no atexit: each record is on disk once write returns
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from gradstep.logging.tensorboard import TensorBoardSink\n"
        "sink = TensorBoardSink(Path(sys.argv[1]), resumed_step=2)\n"
        "sink.open(None)\n"
        "for step in range(3, 8):\n"
        "    sink.write({'kind': 'step', 'step': step, 'loss': step / 8})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert _scalars(tmp_path)["train/loss"] == [(s, s / 8) for s in range(3, 8)]


def test_every_logged_metric_is_a_scalar_per_step_and_per_epoch(runs):
    r = gs.Trainer(
        source="random",
        n=100,
        epochs=3,
        batch_size=16,
        log_every=2,
        val_every=3,
        run_dir=str(runs),
        progress=False,
        checkpoint_every="never",
    ).fit()
    files = list(r.run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1
    s = _scalars(r.run_dir)
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "val/loss",
        "val/acc",
        "epoch/train_loss",
        "epoch/train_acc",
        "epoch/val_loss",
        "epoch/val_acc",
        "epoch/lr",
        "epoch/grad_norm",
    ):
        assert tag in s, tag
    # the values are the run's own: epoch records at their global step
    assert [step for step, _ in s["epoch/train_loss"]] == [h["step"] for h in r.history]
    for (_, value), h in zip(s["epoch/train_loss"], r.history, strict=True):
        assert value == pytest.approx(h["train_loss"], rel=1e-6)
    assert len(s["train/loss"]) == 3 * 2  # 5 steps an epoch, a line every 2


def test_tensorboard_off_writes_no_event_file(runs):
    r = gs.Trainer(
        source="random",
        n=40,
        epochs=1,
        run_dir=str(runs),
        progress=False,
        tensorboard=False,
        checkpoint_every="never",
    ).fit()
    assert not list(r.run_dir.glob("events.out.tfevents.*"))


def test_a_resumed_run_shows_each_step_once(runs):
    settings = dict(
        source="random",
        n=100,
        batch_size=16,
        log_every=1,
        run_dir=str(runs),
        progress=False,
        name="tb",
    )
    gs.Trainer(epochs=4, **settings).fit()
    run = runs / "tb"
    # 80 train samples, batch 16: 5 steps an epoch. Cut the run back to its epoch-2 checkpoint
    # (step 10) and resume: steps 11..20 are logged again, into a second event file
    import shutil

    for p in sorted((run / "checkpoints").glob("step-*"))[2:]:
        shutil.rmtree(p)
    gs.Trainer(epochs=4, **settings).fit(resume=run)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    steps = [step for step, _ in _scalars(run)["train/loss"]]
    assert steps == list(range(1, 21))


def test_values_beyond_float32_are_written_as_infinity(tmp_path):
    sink = TensorBoardSink(tmp_path)
    sink.open(None)
    values = {"a": 1e39, "b": -1e39, "c": 3.4028235e38, "d": math.nan, "e": -math.inf, "f": 1.5}
    sink.write({"kind": "epoch", "step": 3, "epoch": 1, **values})
    sink.close()
    s = _scalars(tmp_path)
    got = {tag.removeprefix("epoch/"): points for tag, points in s.items()}
    assert got.pop("epoch") == [(3, 1.0)]
    assert math.isnan(got.pop("d")[0][1])
    # just past the largest float32 too: it would round down to it, and pass for a real value
    assert got == {
        "a": [(3, math.inf)],
        "b": [(3, -math.inf)],
        "c": [(3, math.inf)],
        "e": [(3, -math.inf)],
        "f": [(3, 1.5)],
    }
