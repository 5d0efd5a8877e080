"""Disk trouble while saving: a clear error naming the path, the previous checkpoint still
loadable, the run stopped (or continued, if asked), and no save reported that did not happen."""

from __future__ import annotations

import errno
import json

import pytest

import gradstep as gs
from gradstep.checkpoint import files, open_checkpoint
from gradstep.checkpoint.writer import step_dirs
from gradstep.cli import main

SETTINGS = dict(source="random", n=80, epochs=5, batch_size=16, progress=False)


def fail_on_call(monkeypatch, n, err):
    """Make the n-th file write (4 per checkpoint) fail with ``err``."""
    real, calls = files._write_file, [0]

    def write(path, data, **kw):
        calls[0] += 1
        if calls[0] == n:
            raise OSError(err, __import__("os").strerror(err), str(path))
        real(path, data, **kw)

    monkeypatch.setattr(files, "_write_file", write)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_a_failed_save_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, err):
    fail_on_call(monkeypatch, 6, err)  # the second checkpoint (end of epoch 2)
    with pytest.raises(gs.SaveError, match="step-000008") as exc:
        gs.Trainer(run_dir=str(tmp_path), **SETTINGS).fit()
    assert __import__("os").strerror(err) in str(exc.value)
    run = next(tmp_path.iterdir())
    folder = run / "checkpoints"
    names = [p.name for _, p in step_dirs(folder)]
    # written in the background: the failure stops the run at the next save or epoch end after it
    # is seen, so at most the one checkpoint already queued behind it is written too
    assert names[0] == "step-000004" and "step-000008" not in names and len(names) <= 2
    assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp")] == []
    assert (folder / "latest").resolve().name == names[-1]
    for name in names:
        gs.load_model(folder / name)  # complete and loadable
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "checkpoint save failed"
    assert summary["checkpoints"] == names
    assert summary["global_step"] < 20  # stopped, not trained to the end
    best = summary["best"]["checkpoint"]
    assert best is None or best.rpartition("/")[2] in names


def test_on_save_error_continue_warns_and_finishes(tmp_path, monkeypatch, capsys):
    fail_on_call(monkeypatch, 6, errno.ENOSPC)
    result = gs.Trainer(run_dir=str(tmp_path), on_save_error="continue", **SETTINGS).fit()
    assert result.summary["stop_reason"] == "completed"
    assert result.summary["global_step"] == 20  # 64 training samples: 4 steps an epoch
    names = result.summary["checkpoints"]
    assert "step-000008" not in names and names[-1] == "step-000020"
    assert "No space left on device" in result.summary["checkpoint_failures"][0]
    assert "training continues" in capsys.readouterr().err
    open_checkpoint(result.run_dir / "checkpoints" / "latest")


def test_the_command_line_says_it_in_one_line_with_exit_1(tmp_path, monkeypatch, capsys):
    fail_on_call(monkeypatch, 2, errno.ENOSPC)
    code = main(["fit", "--set", f"run.dir={tmp_path}", "--set", "train.epochs=2"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "step-" in err[0]
