"""TensorBoard scalars, written without TensorBoard, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest

import gradstep as gs
from gradstep.logging.tensorboard import crc32c

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(run_dir):
    ea = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


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


def test_values_beyond_float32_are_written_as_infinity():
    from gradstep.logging.tensorboard import _summary

    assert _summary({"a": 1e39, "b": -1e39}).count(b"\x00\x00\x80\x7f") == 1  # +inf as float32
