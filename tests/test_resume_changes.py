"""``gradstep resume RUN --set KEY=VALUE``: a change is applied from the checkpoint's step and
recorded (config.toml, summary.json ``changes``, every later checkpoint), or refused naming the
key with nothing in the run touched (see gradstep.checkpoint.changes)."""

from __future__ import annotations

import json
import shutil

import pytest

from gradstep.checkpoint import open_checkpoint
from gradstep.checkpoint.changes import resume_changes
from gradstep.cli import main
from gradstep.config import Config, read_toml

BASE = ["--set=data.source=circles", "--set=data.n=200", "--set=train.epochs=2"]
BASE += ["--set=train.progress=false", "--set=log.plots=false", "--set=log.diagnose=false"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["fit", f"--set=run.dir={runs}", "--set=run.name=base", *BASE]) == 0
    return runs / "base"


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def _lines(run):
    return [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]


def test_lr_and_epochs_are_applied_from_the_step_and_recorded_everywhere(run):
    assert main(["resume", str(run), "--set=optim.lr=0.05", "--set=train.epochs=3"]) == 0
    step = 10  # 160 training samples, batch 32: 5 steps an epoch, 2 epochs
    expected = [
        {"step": step, "key": "optim.lr", "from": 0.001, "to": 0.05},
        {"step": step, "key": "train.epochs", "from": 2, "to": 3},
    ]
    summary = _summary(run)
    assert summary["changes"] == expected and summary["global_step"] == 15
    config = read_toml(run / "config.toml")
    assert config["optim"]["lr"] == 0.05 and config["train"]["epochs"] == 3
    epochs = [r for r in _lines(run) if r["kind"] == "epoch"]
    assert [(r["epoch"], r["lr"]) for r in epochs] == [(1, 0.001), (2, 0.001), (3, 0.05)]
    ckpt = open_checkpoint(run / "checkpoints" / "latest")
    assert ckpt.state()["optimizer"]["param_groups"][0]["lr"] == 0.05  # the rate it used

    # a later resume keeps the list and adds to it
    assert main(["resume", str(run), "--set=train.epochs=4", "--set=early_stop.patience=2"]) == 0
    later = _summary(run)["changes"]
    assert later[:2] == expected
    assert later[2:] == [
        {"step": 15, "key": "early_stop.patience", "from": None, "to": 2},
        {"step": 15, "key": "train.epochs", "from": 3, "to": 4},
    ]
    assert read_toml(run / "config.toml")["early_stop"]["patience"] == 2


def _untouched(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "setting, named",
    [
        (
            "optim.betas=[0.8,0.9]",
            "[optim] betas = [0.8, 0.9]: the run has [0.9, 0.999], and "
            "the optimizer's state holds it",
        ),
        (
            "train.label_smoothing=0.1",
            "[train] label_smoothing = 0.1: the run has 0.0, and the loss is part of the run",
        ),
        (
            "train.batch_size=16",
            "32 = 32 × 1 × 1 in the checkpoint, 16 = 16 × 1 × 1 now); resume with the same "
            "settings, or force",
        ),
        (
            "schedule.name=cosine",
            "[schedule] name = 'cosine': the run has 'none', and a "
            "schedule is fixed when the run starts",
        ),
        ("train.max_steps=10", "[train] max_steps = 10: the run is already at step 10"),
    ],
)
def test_a_change_a_resume_cannot_make_is_refused_naming_the_key(run, capsys, setting, named):
    before = _untouched(run)
    capsys.readouterr()
    assert main(["resume", str(run), f"--set={setting}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert _untouched(run) == before  # config.toml, metrics, checkpoints: nothing changed


def test_force_resumes_an_identity_change_and_records_it_as_forced(run, capsys):
    assert main(["resume", str(run), "--force", "--set=train.batch_size=16"]) == 0
    change = _summary(run)["changes"]
    assert change == [{"step": 10, "key": "train.batch_size", "from": 32, "to": 16, "forced": True}]
    assert read_toml(run / "config.toml")["train"]["batch_size"] == 16


def test_a_run_written_before_a_key_existed_resumes_without_a_change():
    """A run from an earlier version has no ``[data] drop`` / ``features`` list and names the
    feature count ``features``: those are its defaults and old names, not changes."""
    current = Config.model_validate({"data": {"source": "random", "n_features": 6}}).model_dump()
    saved = json.loads(json.dumps(current))
    del saved["data"]["drop"], saved["data"]["features"], saved["data"]["n_features"]
    saved["data"]["features"] = 6
    where = "runs/x"
    same = resume_changes(
        saved, current, progress={"global_step": 4}, batches=5, force=False, where=where
    )
    assert same == []
    picked = json.loads(json.dumps(current))
    picked["data"]["source"], picked["data"]["path"] = "csv", "x.csv"
    picked["data"]["drop"] = ["id"]
    with pytest.raises(Exception, match=r"\[data\] drop = \['id'\]: the run has \[\]"):
        resume_changes(
            saved, picked, progress={"global_step": 4}, batches=5, force=False, where=where
        )


def test_an_old_config_this_version_refuses_whole_is_still_compared_key_by_key():
    """A generated source with a path (accepted once, refused now): its missing keys are
    defaults and its old names new ones, so only what really differs is a change."""
    from gradstep.checkpoint.changes import as_now

    saved = Config().model_dump()
    saved["data"].update(source="random", path="x.csv", features=6)
    del saved["data"]["n_features"], saved["data"]["drop"]
    now = as_now(saved)
    assert now["data"]["n_features"] == 6 and now["data"]["features"] is None
    assert now["data"]["drop"] == [] and now["data"]["path"] == "x.csv"
    assert now["train"] == Config().model_dump()["train"]
