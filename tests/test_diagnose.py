"""The diagnosis: overfitting, underfitting, healthy and unstable runs are told apart, each
with its evidence and a suggestion; ``gradstep diagnose`` prints it."""

from __future__ import annotations

import pytest

import gradstep as gs
from gradstep.cli import main
from gradstep.diagnose import diagnose, diagnose_run


def _fit(runs, **kw):
    settings = dict(run_dir=str(runs), progress=False, checkpoint_every="never")
    settings.update(kw)
    return gs.Trainer(**settings).fit()


def _kinds(result) -> list[str]:
    return [v["kind"] for v in result.summary["diagnosis"]]


def test_a_run_made_to_overfit_is_diagnosed_as_overfitting(runs):
    # random labels: a big MLP memorises the training set, validation gets worse and worse
    r = _fit(
        runs,
        source="random",
        n=300,
        val_split=0.3,
        model="mlp",
        model_args={"hidden": [128, 128]},
        optimizer="adam",
        lr=0.01,
        epochs=40,
        batch_size=16,
    )
    assert _kinds(r) == ["overfitting"]
    v = r.summary["diagnosis"][0]
    best = min(r.history, key=lambda h: h["val_loss"])
    assert f"epoch {best['epoch']}" in v["title"]
    assert any("val_loss was best" in e for e in v["evidence"]) and v["suggestion"]


def test_a_far_too_small_learning_rate_is_underfitting(runs):
    r = _fit(
        runs,
        source="circles",
        n=600,
        model="mlp",
        model_args={"hidden": [32]},
        optimizer="sgd",
        lr=1e-5,
        epochs=10,
        batch_size=32,
    )
    assert _kinds(r) == ["underfitting"]
    assert "fell only" in r.summary["diagnosis"][0]["evidence"][0]
    assert "learning rate" in r.summary["diagnosis"][0]["suggestion"]


def test_a_good_run_is_healthy(runs, capsys):
    r = _fit(
        runs,
        source="circles",
        n=1000,
        model="mlp",
        model_args={"hidden": [32, 32]},
        optimizer="adam",
        lr=0.01,
        epochs=30,
        batch_size=32,
    )
    assert _kinds(r) == ["healthy"]
    assert "Diagnosis:\n  healthy" in capsys.readouterr().out  # printed at the end of fit


def test_stopping_while_the_loss_still_falls_steeply_is_underfitting():
    history = [{"epoch": e, "train_loss": 2.0 * 0.8**e} for e in range(1, 6)]
    (v,) = diagnose(history)
    assert v.kind == "underfitting" and "still falling" in v.evidence[0]


def test_loss_spikes_and_gradient_events_are_unstable():
    history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.3}]
    steps = [{"step": i, "loss": 1.0} for i in range(1, 12)] + [{"step": 12, "loss": 9.0}]
    health = {"exploding": {"step": 40, "grad_norm": 80.0, "why": "median grew 12x"}}
    verdicts = diagnose(history, steps, {"health": health})
    assert verdicts[0].kind == "unstable"
    assert any("exploding gradients from step 40" in e for e in verdicts[0].evidence)
    assert any("loss spike" in e and "step 12" in e for e in verdicts[0].evidence)


def test_batchnorm_with_a_tiny_last_batch_is_flagged():
    history = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 3)]
    summary = {"model": {"batchnorm": True}, "data": {"batch_size": 32, "train_samples": 97}}
    (v,) = [v for v in diagnose(history, [], summary, {"train": {}}) if v.kind == "batchnorm"]
    assert "last batch of every epoch has 1 sample" in v.evidence[0]
    assert "drop_last" in v.suggestion


def test_the_command_prints_the_verdict_and_refuses_a_non_run(runs, tmp_path, capsys):
    r = _fit(runs, source="random", n=64, epochs=2)
    capsys.readouterr()
    assert main(["diagnose", str(r.run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Diagnosis:")
    assert [v.kind for v in diagnose_run(r.run_dir)] == _kinds(r)
    assert main(["diagnose", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("history", [[], [{"epoch": 1, "partial": True}]])
def test_too_little_to_judge_says_so(history):
    verdicts = diagnose(history)
    assert len(verdicts) == 1 and verdicts[0].kind in ("unknown", "healthy")


def test_one_epoch_without_step_lines_is_not_called_underfitting():
    assert [v.kind for v in diagnose([{"epoch": 1, "train_loss": 0.7}])] == ["healthy"]
