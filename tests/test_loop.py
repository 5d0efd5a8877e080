"""The loop's vocabulary: batches, steps, epochs, accumulation, validation, reproducibility."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import gradstep as gs
from gradstep.loop import evaluate_batches


def quiet(runs, **kw):
    return gs.Trainer(run_dir=str(runs), **kw)


def test_progress_line_counts_batches_and_global_steps(runs, capsys):
    trainer = quiet(
        runs,
        source="random",
        n=10_000,
        val_split=0.0,
        batch_size=32,
        epochs=5,
        log_every=50,
        optimizer="sgd",
        lr=0.01,
        model="simplenet",
    )
    trainer.fit()
    out = capsys.readouterr().out
    assert "Epoch [2/5], Batch [50/313], Step [363/1565], Loss: " in out
    assert "Epoch [5/5], Batch [300/313], Step [1552/1565]" in out
    assert "Step [1565/1565]" not in out  # logged every 50 steps of an epoch, as the classic loop


@pytest.mark.parametrize(("batch_size", "steps"), [(1, 200), ("full", 2), (20, 10)])
def test_sgd_bgd_and_minibatch_make_the_right_number_of_steps(runs, batch_size, steps):
    result = quiet(
        runs, source="random", n=100, val_split=0.0, epochs=2, batch_size=batch_size
    ).fit()
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["global_step"] == steps
    assert summary["epochs_completed"] == 2
    assert summary["data"]["batches_per_epoch"] == steps // 2


def test_drop_last_uses_floor_and_partial_batch_uses_ceil(runs):
    kept = quiet(runs, source="random", n=100, val_split=0.0, epochs=1, batch_size=32).fit()
    dropped = quiet(
        runs, source="random", n=100, val_split=0.0, epochs=1, batch_size=32, drop_last=True
    ).fit()
    assert kept.summary["global_step"] == 4
    assert dropped.summary["global_step"] == 3


def test_max_steps_stops_mid_epoch_and_says_why(runs):
    result = quiet(
        runs, source="random", n=100, val_split=0.2, epochs=10, batch_size=10, max_steps=13
    ).fit()
    assert result.summary["global_step"] == 13
    assert result.summary["stop_reason"] == "max_steps"
    assert result.summary["epochs_completed"] == 1  # 8 steps per epoch: epoch 2 is partial
    assert result.history[-1]["partial"] is True
    assert "val_loss" in result.history[-1]  # validated at the stop


def test_accumulation_counts_optimizer_steps_and_applies_trailing_group(runs):
    # 100 samples, batch 8 -> 13 micro-batches; accumulate 4 -> 4 steps (the last has 1 batch)
    result = quiet(
        runs, source="random", n=100, val_split=0.0, epochs=3, batch_size=8, accumulate=4
    ).fit()
    assert result.summary["global_step"] == 12
    assert result.summary["data"]["effective_batch"] == 32


def _linear_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def test_accumulation_matches_the_large_batch_including_the_partial_group(runs):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 6, generator=g), torch.randint(0, 3, (100,), generator=g)
    common = dict(epochs=3, optimizer="sgd", lr=0.1, val_split=0.0, normalize=False)
    big = quiet(runs, batch_size=32, **common).fit(_linear_model(), train=(x, y))
    small = quiet(runs, batch_size=8, accumulate=4, **common).fit(_linear_model(), train=(x, y))
    for a, b in zip(big.model.parameters(), small.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # the logged loss is the true mean over the samples, whatever the micro-batching
    assert big.history[0]["train_loss"] == pytest.approx(small.history[0]["train_loss"], 1e-5)


class Recorder(gs.Callback):
    """Records the mode and grad state of every forward pass, and BN stats around validation."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[str, bool, bool, bool]] = []
        self.phase = "preflight"  # the shape check before training runs the model once
        self.bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
        self.before: dict[str, torch.Tensor] = {}
        model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.calls.append(
            (self.phase, module.training, torch.is_grad_enabled(), output.requires_grad)
        )

    def on_fit_start(self, state):
        self.phase = "train"

    def on_step_end(self, state):
        self.before = {k: v.clone() for k, v in self.bn.state_dict().items()}
        self.phase = "val"  # until the next training step starts

    def on_epoch_start(self, state):
        self.phase = "train"

    def on_validation_end(self, state):
        self.after = {k: v.clone() for k, v in self.bn.state_dict().items()}


def test_validation_runs_in_eval_mode_without_gradients_and_keeps_bn_stats(runs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    rec = Recorder(model)
    # one step per epoch (full batch), so "after the step" is exactly "validation"
    quiet(
        runs, source="moons", n=200, batch_size="full", epochs=2, val_split=0.25, callbacks=[rec]
    ).fit(model)
    val_calls = [c for c in rec.calls if c[0] == "val"]
    train_calls = [c for c in rec.calls if c[0] == "train"]
    assert rec.calls[0][:3] == ("preflight", False, False)
    assert val_calls and all(
        not training and not grad and not rg for _, training, grad, rg in val_calls
    )
    assert train_calls and all(training and grad and rg for _, training, grad, rg in train_calls)
    for key, value in rec.before.items():
        assert torch.equal(value, rec.after[key]), key
    assert model.training  # training mode restored after validation


def test_evaluate_batches_restores_mode_and_computes_no_grad():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    stats = model[1].running_mean.clone()
    metrics = evaluate_batches(model, [(x, y)], nn.CrossEntropyLoss(), "multiclass")
    assert set(metrics) == {"loss", "acc"}
    assert torch.equal(model[1].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_two_seeded_runs_give_identical_weights_and_other_seeds_differ(runs):
    def run(seed):
        return quiet(
            runs, source="digits", model="mlp", model_args={"dropout": 0.2}, epochs=2, seed=seed
        ).fit()

    a, b, c = run(3), run(3), run(4)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history == [{**h, "time_s": a.history[i]["time_s"]} for i, h in enumerate(b.history)]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_callback_stops_training_through_the_state(runs):
    class StopAfterTwo(gs.Callback):
        def on_epoch_end(self, state):
            if state.epoch == 2:
                state.stop("enough")

    result = quiet(runs, source="random", n=64, epochs=10, callbacks=[StopAfterTwo()]).fit()
    assert result.summary["stop_reason"] == "enough"
    assert result.summary["epochs_completed"] == 2


def test_val_every_steps_validates_at_those_steps_and_at_the_end(runs):
    result = quiet(
        runs, source="random", n=100, val_split=0.2, epochs=3, batch_size=16, val_every=4
    ).fit()
    lines = [json.loads(s) for s in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in lines if r["kind"] == "val"]
    assert val_steps == [4, 8, 12, 15]  # 5 steps an epoch; the last step is validated too
    assert all("val_loss" in h for h in result.history)


def test_labels_of_a_dataset_are_checked_from_its_first_samples(runs):
    from torch.utils.data import Dataset

    class Samples(Dataset):  # a generic Dataset, not in-memory tensors
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.ones(3) * i, 5 if i == 0 else i % 2

    ds = Samples()
    with pytest.raises(gs.UserError, match="label 5 is outside"):
        quiet(runs, val_split=0.0).fit(nn.Linear(3, 2), ds)
