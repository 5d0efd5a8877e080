"""The Python API: in-memory tensors and arrays, Datasets, DataLoaders, evaluate and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import gradstep as gs


def blobs(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) + 3 * nn.functional.one_hot(y, 4).float() + 10
    return x, y


def trainer(runs, **kw):
    kw = {"epochs": 5, "lr": 0.01, "run_dir": str(runs), **kw}
    return gs.Trainer(**kw)


def test_fit_tensors_with_validation_and_history(runs):
    x, y = blobs()
    xv, yv = blobs(100, seed=1)
    result = trainer(runs).fit(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)), train=(x, y), val=(xv, yv)
    )
    h = result.history[-1]
    assert set(h) >= {
        "epoch",
        "step",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "time_s",
    }
    assert h["val_acc"] > 0.9  # blobs are separable once normalised
    assert result.summary["data"]["train_samples"] == 300  # val given: no split
    assert result.summary["best"]["monitor"] == "val_loss"
    lines = [json.loads(s) for s in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    assert epochs[-1]["val_acc"] == h["val_acc"]
    assert result.run_dir.name == "sequential-data"


def test_numpy_arrays_and_model_names(runs):
    x, y = blobs()
    result = trainer(runs).fit("mlp", train=(x.numpy().astype(np.float64), y.numpy()))
    assert result.config.model.args["input_size"] == 4
    assert result.config.model.args["num_classes"] == 3
    assert result.summary["data"]["train_samples"] == 240  # val_split 0.2 of 300


class PairDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_dataset_and_dataloader_inputs(runs):
    x, y = blobs()
    model = nn.Sequential(nn.Linear(4, 3))
    r1 = trainer(runs, normalize=False, lr=0.1, batch_size=50).fit(model, PairDataset(x, y))
    assert r1.summary["global_step"] == 5 * 5  # 240 train samples after the split -> 5 batches
    loader = DataLoader(TensorDataset(x, y), batch_size=100, shuffle=True)
    r2 = trainer(runs, epochs=2).fit(nn.Sequential(nn.Linear(4, 3)), loader)
    assert r2.summary["global_step"] == 6  # TensorDataset via a DataLoader: the loader's batches
    r3 = trainer(runs, epochs=1, batch_size=30).fit(nn.Linear(4, 3), TensorDataset(x, y))
    assert r3.summary["data"]["batches_per_epoch"] == 8  # a TensorDataset is in-memory data


def test_evaluate_and_predict_apply_the_training_normalisation(runs):
    x, y = blobs()
    t = trainer(runs, epochs=20)
    result = t.fit("mlp", train=(x, y))
    val_acc = result.history[-1]["val_acc"]
    raw = t.evaluate((x, y))  # raw, unnormalised input: the trainer normalises it
    assert raw["acc"] == pytest.approx(1.0, abs=0.02) and val_acc > 0.95
    logits = t.predict(x)
    assert logits.shape == (300, 3)
    assert (logits.argmax(1) == y).float().mean() == pytest.approx(raw["acc"])
    assert torch.equal(t.predict(x.numpy()), logits)
    assert result.model.training  # predict/evaluate restore the mode


def test_regression_with_mse_reports_mae(runs):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    result = trainer(runs, loss="mse", epochs=30, lr=0.05).fit(nn.Linear(3, 1), train=(x, y))
    h = result.history[-1]
    assert {"train_loss", "train_mae", "val_loss", "val_mae"} <= set(h)
    assert h["val_mae"] < 0.2
    assert "train_acc" not in h


def test_binary_classification_with_bce_with_logits(runs):
    result = gs.Trainer(
        source="moons",
        n=400,
        loss="bce_with_logits",
        epochs=30,
        lr=0.01,
        run_dir=str(runs),
        model="mlp",
        model_args={"hidden": [16]},
    ).fit()
    assert result.config.model.args["num_classes"] == 1
    assert result.history[-1]["val_acc"] > 0.8


def test_settings_errors_are_user_errors():
    with pytest.raises(gs.UserError, match="unknown setting 'epoch'"):
        gs.Trainer(epoch=3)
    with pytest.raises(gs.UserError, match="call fit"):
        gs.Trainer().predict(torch.zeros(2, 2))


def test_mismatched_lengths_and_bad_types_are_user_errors(runs):
    with pytest.raises(gs.UserError, match="X has 3 samples but y has 2"):
        trainer(runs).fit(nn.Linear(2, 2), train=(torch.zeros(3, 2), torch.zeros(2)))
    with pytest.raises(gs.UserError, match=r"expected \(X, y\) tensors or arrays"):
        trainer(runs).fit(nn.Linear(2, 2), train="data.csv")
    assert not runs.exists()


def test_label_smoothing_and_each_optimizer_train(runs):
    x, y = blobs()
    for opt in ("sgd", "adam", "adamw", "rmsprop"):
        kw = {"momentum": 0.9, "nesterov": True} if opt == "sgd" else {}
        result = trainer(runs, optimizer=opt, epochs=3, label_smoothing=0.1, **kw).fit(
            "mlp", train=(x, y)
        )
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] + 1e-6, opt
