"""The Python API: in-memory tensors and arrays, Datasets, DataLoaders, evaluate and predict."""

from __future__ import annotations

import json
import sys

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


# --- models the user built (issue 14, point 9) -------------------------------------------------


class Widths(nn.Module):
    """A user's model that records its constructor arguments."""

    def __init__(self, features: int, classes: int, hidden: tuple[int, ...] = (8,)) -> None:
        super().__init__()
        gs.save_init_args(self)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(features, h), nn.ReLU()]
            features = h
        self.body = nn.Sequential(*layers, nn.Linear(features, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Unrecorded(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _small(runs, **kw):
    return trainer(runs, epochs=1, batch_size=32, progress=False, **kw)


def test_an_instance_that_records_its_init_args_is_rebuilt_by_load_model(runs):
    x, y = blobs(96)
    result = _small(runs).fit(Widths(4, 3, hidden=(6, 5)), train=(x, y))
    info = json.loads((result.run_dir / "checkpoints" / "latest" / "model.json").read_text())
    assert info["name"] == "tests.test_trainer:Widths"
    assert info["args"] == {"features": 4, "classes": 3, "hidden": [6, 5]}
    assert "[model.args]" in (result.run_dir / "config.toml").read_text()
    loaded = gs.load_model(result.run_dir / "checkpoints" / "latest")  # no model=
    assert type(loaded.network) is Widths and len(loaded.network.body) == 5
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.predictor(x), atol=1e-6, rtol=0)


def test_an_instance_from_a_file_in_the_working_directory_loads_from_the_code_folder(
    tmp_path, monkeypatch
):
    code = tmp_path / "code"
    code.mkdir()
    (code / "user_net_q7.py").write_text(
        "import gradstep as gs\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, features, classes=3):\n"
        "        super().__init__()\n"
        "        gs.save_init_args(self)\n"
        "        self.fc = nn.Linear(features, classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    monkeypatch.chdir(code)
    monkeypatch.syspath_prepend(str(code))
    import user_net_q7  # the user's own import

    x, y = blobs(64)
    result = _small(tmp_path / "runs").fit(user_net_q7.Net(4), train=(x, y))
    assert result.config.model.name == "user_net_q7.py:Net"
    monkeypatch.delitem(sys.modules, "user_net_q7")
    loaded = gs.load_model(result.run_dir)  # the file, from the code folder (the cwd)
    assert type(loaded.network).__name__ == "Net"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gs.CheckpointError, match="--code-dir"):
        gs.load_model(result.run_dir)
    assert gs.load_model(result.run_dir, code_dir=code) is not None


def test_a_script_model_keeps_the_clear_message_and_an_unrecorded_one_says_how(runs):
    x, y = blobs(64)

    class Script(Widths):
        pass

    Script.__module__ = "__main__"
    run = _small(runs, name="script").fit(Script(4, 3), train=(x, y)).run_dir
    with pytest.raises(gs.CheckpointError, match="defined in a script"):
        gs.load_model(run)
    assert isinstance(gs.load_model(run, model=Script(4, 3)), gs.Predictor)
    run = _small(runs, name="plain").fit(Unrecorded(4, 3), train=(x, y)).run_dir
    with pytest.raises(gs.CheckpointError, match=r"gs\.save_init_args\(self\)"):
        gs.load_model(run)


def test_a_compiled_model_is_checkpointed_as_the_module_it_wraps(runs, tmp_path):
    from gradstep.checkpoint.files import read_tensors
    from gradstep.cli import main

    x, y = blobs(64)
    net = Widths(4, 3)
    compiled = torch.compile(net, backend="eager")  # wraps it in OptimizedModule (_orig_mod)
    t = _small(runs)
    result = t.fit(compiled, train=(x, y))
    assert result.model is compiled and result.run_dir.name == "widths-data"
    ckpt = result.run_dir / "checkpoints" / "latest"
    assert set(read_tensors(ckpt / "model.safetensors")) == set(net.state_dict())
    assert result.config.model.name == "tests.test_trainer:Widths"
    loaded = gs.load_model(ckpt)
    assert type(loaded.network) is Widths
    with torch.no_grad():
        assert torch.allclose(loaded(x), t.predict(x), atol=1e-6, rtol=0)
    np.savez(tmp_path / "x.npz", X=x.numpy())
    out = tmp_path / "p.csv"
    assert main(["predict", str(ckpt), str(tmp_path / "x.npz"), "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert (
        len(rows) == 65
        and [int(r.split(",")[0]) for r in rows[1:]] == t.predict(x).argmax(1).tolist()
    )
    # resuming it (compiled again) loads the plain weights into the module it wraps
    again = torch.compile(Widths(4, 3), backend="eager")
    resumed = trainer(runs, epochs=2, batch_size=32, progress=False).fit(
        again, train=(x, y), resume=result.run_dir
    )
    assert resumed.summary["epochs_completed"] == 2


def test_early_stopping_keeps_a_compiled_models_best_weights_under_the_modules_keys(runs):
    """The best weights early stopping keeps (and checkpoints) are the wrapped module's: a
    resume with the plain module, and the restore at the end, both take them."""
    from gradstep.checkpoint.files import read_tensors

    x, y = blobs(64)
    net = Widths(4, 3)
    settings = dict(batch_size=32, progress=False, patience=5, lr=0.5, print_diagnosis=False)
    result = trainer(runs, epochs=3, **settings).fit(
        torch.compile(net, backend="eager"), train=(x, y)
    )
    ckpt = result.run_dir / "checkpoints" / "latest"
    assert set(read_tensors(ckpt / "callbacks.safetensors")) == {
        f"EarlyStopping/{k}" for k in net.state_dict()
    }
    resumed = trainer(runs, epochs=4, **settings).fit(
        Widths(4, 3), train=(x, y), resume=result.run_dir
    )
    assert resumed.summary["epochs_completed"] == 4


def test_more_outputs_than_classes_is_one_warning_at_start(runs, capsys):
    x, y = blobs(64)
    y = y % 2  # two classes
    _small(runs).fit(Widths(4, 10), train=(x, y))
    err = capsys.readouterr().err
    assert err.count("the model has 10 outputs but the data has 2 classes") == 1
    _small(runs).fit(Widths(4, 2), train=(x, y))
    assert "outputs but the data has" not in capsys.readouterr().err
