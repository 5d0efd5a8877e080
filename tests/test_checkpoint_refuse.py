"""Resume refuses a checkpoint from a different run, says what differs, and --force overrides."""

from __future__ import annotations

import shutil

import pytest
import torch

import gradstep as gs
from gradstep.checkpoint import open_checkpoint
from gradstep.checkpoint.files import CheckpointError
from gradstep.cli import main

SETTINGS = dict(source="random", n=64, epochs=2, batch_size=16, progress=False, name="r")


@pytest.fixture
def run(tmp_path):
    return gs.Trainer(run_dir=str(tmp_path), **SETTINGS).fit().run_dir


@pytest.mark.parametrize(
    ("change", "named"),
    [
        # the samples per step: named as batch_size × accumulate × processes (gradstep.dist)
        ({"batch_size": 8}, "16 = 16 × 1 × 1 in the checkpoint, 8 = 8 × 1 × 1 now"),
        ({"accumulate": 2}, "16 = 16 × 1 × 1 in the checkpoint, 32 = 16 × 2 × 1 now"),
        ({"model_args": {"hidden": [7]}}, "model_args"),
        ({"model": "simplenet"}, "model: 'mlp' in the checkpoint, 'simplenet' now"),
        ({"n": 65}, "data: the training data differ"),
        ({"seed": 1}, "seed: 0 in the checkpoint, 1 now"),
    ],
)
def test_a_mismatched_resume_is_refused_naming_what_differs(run, tmp_path, change, named):
    settings = {**SETTINGS, "epochs": 3, **change}
    with pytest.raises(CheckpointError, match="written by a different run") as err:
        gs.Trainer(run_dir=str(tmp_path), **settings).fit(resume=run)
    assert named in str(err.value)
    assert (run / "checkpoints" / "step-000008").is_dir()  # nothing was changed on disk


def test_force_resumes_anyway_and_more_epochs_continue_the_run(run, tmp_path):
    more = gs.Trainer(run_dir=str(tmp_path), **{**SETTINGS, "epochs": 4}).fit(resume="latest")
    assert more.run_dir == run and more.summary["global_step"] == 16
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4]
    forced = gs.Trainer(run_dir=str(tmp_path), **{**SETTINGS, "epochs": 5, "seed": 3})
    assert forced.fit(resume=run, force=True).summary["global_step"] == 20


def test_resuming_a_finished_run_says_so(run, capsys):
    assert main(["resume", str(run)]) == 0
    assert "already finished (completed)" in capsys.readouterr().out


def test_resume_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noconf").mkdir()
    (tmp_path / "noconf" / "checkpoints").mkdir()
    for path, message in [
        (tmp_path / "missing", "no such"),
        (tmp_path / "empty", "not a run directory (no config.toml)"),
    ]:
        assert main(["resume", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_a_run_without_a_good_checkpoint_starts_again_in_its_directory(tmp_path, capsys):
    # as if killed before its first checkpoint was durable: no checkpoint, a log
    first = gs.Trainer(run_dir=str(tmp_path), **SETTINGS).fit()
    shutil.rmtree(first.run_dir / "checkpoints")
    assert main(["resume", str(first.run_dir)]) == 0
    assert "the run starts again from the beginning" in capsys.readouterr().err
    ckpt = open_checkpoint(first.run_dir / "checkpoints" / "latest")
    want = first.model.state_dict()
    got = ckpt.model_tensors()
    assert all(torch.equal(want[k], got[k]) for k in want)
    lines = (first.run_dir / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in line for line in lines) == 2  # the old log was not kept


def test_another_optimizer_is_refused_before_anything_changes(run, tmp_path):
    config = (run / "config.toml").read_text()
    log = (run / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="optimizer: 'adam' in the checkpoint, 'sgd' now"):
        gs.Trainer(run_dir=str(tmp_path), optimizer="sgd", **SETTINGS).fit(resume=run)
    with pytest.raises(CheckpointError, match="optimizer"):  # even forced: it cannot fit
        gs.Trainer(run_dir=str(tmp_path), optimizer="sgd", **SETTINGS).fit(resume=run, force=True)
    assert (run / "config.toml").read_text() == config
    assert (run / "metrics.jsonl").read_text() == log


def test_checkpoints_that_all_fail_to_verify_are_an_error_not_a_restart(run, capsys):
    for p in (run / "checkpoints").glob("step-*/model.safetensors"):
        p.write_bytes(b"garbage")
    assert main(["resume", str(run)]) == 2
    assert "no checkpoint verifies" in capsys.readouterr().err
    assert len(list((run / "checkpoints").glob("step-*"))) == 2  # nothing renamed or removed


class Counter(gs.Callback):
    """A callback with state: counts epochs and draws from the global RNG each epoch."""

    def __init__(self) -> None:
        self.epochs, self.draws = 0, []

    def on_epoch_end(self, state) -> None:
        self.epochs += 1
        self.draws.append(float(torch.rand(())))

    def state_dict(self):
        return {"epochs": self.epochs, "draws": self.draws}

    def load_state_dict(self, state) -> None:
        self.epochs, self.draws = state["epochs"], list(state["draws"])


def test_a_callbacks_state_resumes_as_if_never_stopped(tmp_path):
    settings = {**SETTINGS, "epochs": 4, "model_args": {"dropout": 0.3}}
    whole = Counter()
    ref = gs.Trainer(run_dir=str(tmp_path), callbacks=[whole], **{**settings, "name": "a"}).fit()

    class Stop(gs.Callback):
        def on_epoch_start(self, state) -> None:
            if state.epoch == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gs.Trainer(
            run_dir=str(tmp_path), callbacks=[Counter(), Stop()], **{**settings, "name": "b"}
        ).fit()
    again = Counter()
    res = gs.Trainer(run_dir=str(tmp_path), callbacks=[again], **{**settings, "name": "b"}).fit(
        resume=tmp_path / "b"
    )
    assert (again.epochs, again.draws) == (whole.epochs, whole.draws)
    pairs = zip(ref.model.parameters(), res.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
