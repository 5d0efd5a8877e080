"""Early stopping: patience, min_delta, any logged metric, best weights restored, resumable."""

from __future__ import annotations

import shutil

import pytest
import torch

import gradstep as gs
from gradstep.callbacks.early_stopping import EarlyStopping
from gradstep.state import TrainState


class Snapshots(gs.Callback):
    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, state):
        self.weights[state.epoch] = {
            k: v.detach().clone() for k, v in state.model.state_dict().items()
        }


def _trainer(runs, **kw):
    settings = dict(
        source="random",
        n=120,
        epochs=30,
        batch_size=16,
        optimizer="sgd",
        lr=0.1,
        run_dir=str(runs),
        progress=False,
    )
    settings.update(kw)
    return gs.Trainer(**settings)


def test_stops_after_patience_epochs_and_restores_the_best_weights(runs):
    # train_loss falls every epoch, so "max" never improves after epoch 1
    seen = Snapshots()
    trainer = _trainer(runs, patience=3, early_stop_monitor="train_loss", early_stop_mode="max")
    trainer.callbacks.append(seen)
    r = trainer.fit()
    assert r.summary["epochs_completed"] == 4
    assert r.summary["stop_reason"].startswith("early stopping: train_loss did not improve for 3")
    es = r.summary["early_stop"]
    assert es["best_epoch"] == 1 and es["stopped_epoch"] == 4 and es["restored_best"]
    for k, v in r.model.state_dict().items():
        assert torch.equal(v, seen.weights[1][k]), k
    # the final checkpoint keeps the true last state (exact resume), not the restored weights
    last = gs.load_model(r.run_dir / "checkpoints" / "latest")
    assert any(not torch.equal(v, seen.weights[1][k]) for k, v in last.state_dict().items())


def test_restore_best_false_keeps_the_last_weights(runs):
    seen = Snapshots()
    trainer = _trainer(
        runs,
        patience=2,
        early_stop_monitor="train_loss",
        early_stop_mode="max",
        restore_best=False,
    )
    trainer.callbacks.append(seen)
    r = trainer.fit()
    for k, v in r.model.state_dict().items():
        assert torch.equal(v, seen.weights[3][k])


def test_min_delta_counts_only_real_improvements():
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1, restore_best=False)
    state = TrainState(epochs=10, batches_per_epoch=1)
    for epoch, value in enumerate([1.0, 0.95, 0.92], start=1):
        state.epoch = epoch
        state.history.append({"val_loss": value})
        es.on_epoch_end(state)
    assert state.should_stop and es.best == 1.0  # 0.95 and 0.92 are within min_delta


def test_any_logged_metric_can_be_monitored(runs):
    r = _trainer(runs, epochs=3, patience=5, early_stop_monitor="grad_norm").fit()
    assert r.summary["early_stop"]["monitor"] == "grad_norm"


def test_an_unknown_monitor_is_refused_before_anything_is_written(runs):
    with pytest.raises(gs.UserError, match=r"\[early_stop\] monitor = 'val_los'.*did you mean"):
        _trainer(runs, patience=2, early_stop_monitor="val_los").fit()
    assert not runs.exists()


def test_the_best_weights_resume_with_the_run(runs):
    def trainer():
        return _trainer(
            runs,
            epochs=6,
            patience=50,
            early_stop_monitor="train_loss",
            early_stop_mode="max",
            name="es",
            checkpoint_keep=10,
        )

    full = trainer().fit()
    # a copy of the run cut back to its checkpoint at the end of epoch 3, resumed from there
    copy = runs / "copy"
    shutil.copytree(full.run_dir, copy, symlinks=True)
    kept = sorted((copy / "checkpoints").glob("step-*"))
    assert len(kept) == 6 and (kept[2] / "callbacks.safetensors").is_file()
    for p in kept[3:]:
        shutil.rmtree(p)
    r2 = trainer().fit(resume=copy)
    assert r2.summary["resumed_from"]["step"] == 18
    for (k, a), b in zip(
        full.model.state_dict().items(), r2.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k  # epoch 1's weights, restored from the checkpoint's copy


def test_a_monitor_that_was_never_finite_stops_with_a_message_not_a_type_error():
    """Every epoch's val_loss NaN (a diverged model): no best value ever; the stop reason must
    still be written (formatting None as a number raised TypeError)."""
    es = EarlyStopping(monitor="val_loss", patience=1)
    state = TrainState(epochs=5, batches_per_epoch=1)
    for epoch in (1, 2):
        state.epoch = epoch
        state.history.append({"epoch": epoch, "val_loss": float("nan")})
        es.on_epoch_end(state)
    assert state.should_stop and "never finite" in state.stop_reason
