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
        ({"batch_size": 8}, "batch_size: 16 in the checkpoint, 8 now"),
        ({"accumulate": 2}, "accumulate: 1 in the checkpoint, 2 now"),
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
