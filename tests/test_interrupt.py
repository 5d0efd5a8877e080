"""Interrupted is not lost: a first SIGINT / SIGTERM stops after the step, with a checkpoint there
and the summary; a second stops at once; exit 130 / 143; a resume is bit-identical.

The signals are real: a callback sends them to this very process (``os.kill(os.getpid(), ...)``),
and Python runs the handler ``Trainer.fit`` installed before the callback returns. The same with
separate processes, signalled by the test, is in ``test_checkpoint_resume.py``.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import gradstep as gs
from gradstep.checkpoint import open_checkpoint
from gradstep.cli import main
from gradstep.interrupt import Interrupted, StopOnSignal

# 96 training samples, batch 8, accumulate 3: 12 micro-batches = 4 steps an epoch, 3 epochs;
# dropout draws from the global RNG; validation every 3 steps (so an epoch's end does not
# validate, and an interrupted epoch must not either)
SETTINGS = dict(
    source="random",
    n=120,
    features=5,
    classes=3,
    val_split=0.2,
    epochs=3,
    batch_size=8,
    accumulate=3,
    model="mlp",
    model_args={"hidden": [12], "dropout": 0.2},
    optimizer="adam",
    lr=0.01,
    log_every=1,
    val_every=3,
    checkpoint_every=2,
    progress=False,
    seed=3,
    plots=False,
    tensorboard=False,
    print_diagnosis=False,
)


class SendAt(gs.Callback):
    """Send ``signals`` to this process in step ``step``'s ``on_step_end``."""

    def __init__(self, step: int, *signals: int) -> None:
        self.step, self.signals = step, signals

    def on_step_end(self, state) -> None:
        if state.global_step == self.step:
            for sig in self.signals:
                os.kill(os.getpid(), sig)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ref")
    gs.Trainer(run_dir=str(runs), name="ref", **SETTINGS).fit()
    return runs / "ref"


def _metrics(run):
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("time_s", None)
        out.append(record)
    return out


@pytest.mark.parametrize("step", [6, 8])  # mid-epoch 2; the last step of epoch 2
def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resume_is_bit_identical(
    tmp_path, reference, step
):
    trainer = gs.Trainer(
        run_dir=str(tmp_path), name="x", callbacks=[SendAt(step, signal.SIGTERM)], **SETTINGS
    )
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    run = tmp_path / "x"
    assert info.value.exit_code == 143 and info.value.signum == signal.SIGTERM
    assert f"at step {step}" in str(info.value)
    assert f"continue with: gradstep resume {run}" in str(info.value)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["global_step"] == step
    assert "error" not in summary
    ckpt = open_checkpoint(run / "checkpoints" / "latest")
    assert ckpt.step == step  # written where it stopped, mid-epoch or not
    progress = ckpt.state()["progress"]
    assert progress["in_epoch"] is (step == 6) and progress["should_stop"] is False
    # mid-epoch: no partial epoch record, no extra validation; at its end: the usual record
    assert [h["epoch"] for h in summary_history(run)] == ([1] if step == 6 else [1, 2])
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored

    result = gs.Trainer(run_dir=str(tmp_path), name="x", **SETTINGS).fit(resume=run)
    assert result.summary["stop_reason"] == "completed"
    assert result.summary["resumed_from"]["step"] == step
    a, b = (
        open_checkpoint(run / "checkpoints" / "latest"),
        open_checkpoint(reference / "checkpoints" / "latest"),
    )
    assert a.step == b.step == 12
    for kind in ("model_tensors", "optimizer_tensors"):
        ta, tb = getattr(a, kind)(), getattr(b, kind)()
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), (kind, key)
    for key in ("progress", "rng", "optimizer", "callbacks", "history"):
        assert _strip(a.state()[key]) == _strip(b.state()[key]), key
    assert _metrics(run) == _metrics(reference)


def summary_history(run):
    return open_checkpoint(run / "checkpoints" / "latest").state()["history"]


def _strip(value):
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "time_s"}
    return value


def test_a_second_signal_stops_at_once_without_another_checkpoint(tmp_path):
    cb = SendAt(5, signal.SIGTERM, signal.SIGTERM)
    trainer = gs.Trainer(run_dir=str(tmp_path), name="x", callbacks=[cb], **SETTINGS)
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    assert "at once" in str(info.value) and info.value.exit_code == 143
    run = tmp_path / "x"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["global_step"] == 5
    assert summary["checkpoints"] == ["step-000002", "step-000004"]  # none at step 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    result = gs.Trainer(run_dir=str(tmp_path), name="x", **SETTINGS).fit(resume=run)
    assert result.summary["resumed_from"]["step"] == 4
    assert result.summary["global_step"] == 12


def test_sigint_is_exit_130_and_the_command_line_says_how_to_continue(
    tmp_path, monkeypatch, capsys
):
    real = gs.Trainer.__init__

    def init(self, config=None, *, callbacks=(), **settings):
        real(self, config, callbacks=[*callbacks, SendAt(3, signal.SIGINT)], **settings)

    monkeypatch.setattr(gs.Trainer, "__init__", init)
    args = [f"--set=run.dir={tmp_path}", "--set=run.name=cli", "--set=data.source=circles"]
    args += ["--set=data.n=200", "--set=train.epochs=2", "--set=train.progress=false"]
    assert main(["fit", *args]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (
        "gradstep: warning: SIGINT received: stopping after this step, with a checkpoint "
        "(send it again to stop at once)"
    )
    run = tmp_path / "cli"
    assert err[-1] == (
        "gradstep: interrupted by SIGINT at step 3 (epoch 1, after batch 3/5), checkpoint "
        f"step-000003; continue with: gradstep resume {run}"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    assert main(["resume", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["resumed_from"]["step"] == 3


def test_a_run_on_python_data_says_how_to_continue_from_python(tmp_path):
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    trainer = gs.Trainer(
        run_dir=str(tmp_path),
        name="py",
        epochs=2,
        batch_size=16,
        progress=False,
        callbacks=[SendAt(2, signal.SIGTERM)],
    )
    with pytest.raises(Interrupted) as info:
        trainer.fit(train=(x, y))
    assert str(info.value).endswith(
        f"continue with: Trainer(...).fit(model, train, resume={str(tmp_path / 'py')!r})"
    )


def test_a_signal_ignored_when_fit_starts_stays_ignored(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cb = SendAt(2, signal.SIGINT)
        result = gs.Trainer(run_dir=str(tmp_path), name="x", callbacks=[cb], **SETTINGS).fit()
        assert result.summary["stop_reason"] == "completed"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_handler_sets_a_flag_and_restores_what_was_there():
    seen = []
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal(seen.append) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and len(seen) == 1
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
