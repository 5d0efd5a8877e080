"""A loaded model takes raw input: ``gs.load_model(ckpt)(X_raw)`` = ``gradstep predict`` =
``trainer.predict`` = ``result.predictor`` (issue 14, point 1)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradstep as gs
from gradstep.cli import main
from gradstep.inference import prepare_input

TOL = 1e-6


def _predict_cli(ckpt: Path, data: Path, out: Path) -> list[dict[str, float]]:
    assert main(["predict", str(ckpt), str(data), "--out", str(out)]) == 0
    with out.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _probs(rows: list[dict[str, float]]) -> torch.Tensor:
    keys = sorted((k for k in rows[0] if k.startswith("prob_")), key=lambda k: int(k[5:]))
    return torch.tensor([[r[k] for k in keys] for r in rows], dtype=torch.float64)


def _model_json(ckpt: Path) -> dict:
    return json.loads((ckpt / "model.json").read_text())


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    """scikit-learn's breast-cancer table as a CSV with feature names and a target column, and
    a 2-epoch MLP run on it through the csv source (normalize = true, the default)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    root = tmp_path_factory.mktemp("cancer")
    path = root / "cancer.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*bunch.feature_names, "target"])
        writer.writerows([*row, int(t)] for row, t in zip(bunch.data, bunch.target, strict=True))
    trainer = gs.Trainer(
        run_dir=str(root / "runs"),
        source="csv",
        data_path=str(path),
        model="mlp",
        model_args={"hidden": [16]},
        epochs=2,
        batch_size=32,
        lr=0.01,
        progress=False,
    )
    result = trainer.fit()
    x = torch.from_numpy(bunch.data).float()  # the raw features, as the CSV holds them
    return trainer, result, path, x, torch.from_numpy(bunch.target)


def test_breast_cancer_csv_loaded_model_takes_raw_features(cancer, tmp_path):
    trainer, result, path, x, y = cancer
    ckpt = result.run_dir / "checkpoints" / "latest"
    predictor = gs.load_model(ckpt)
    assert isinstance(predictor, gs.Predictor) and not predictor.training
    with torch.no_grad():
        out = predictor(x)
        # a NumPy array of the CSV's float64 values is the same input
        assert torch.allclose(predictor(x.double().numpy()), out, atol=TOL, rtol=0)
    # equal to trainer.predict on the same raw features, and to the in-memory predictor
    assert torch.allclose(out, trainer.predict(x), atol=TOL, rtol=0)
    with torch.no_grad():
        assert torch.allclose(result.predictor(x), out, atol=TOL, rtol=0)
    # ... and to `gradstep predict` on the CSV itself (its target column is left out)
    rows = _predict_cli(ckpt, path, tmp_path / "preds.csv")
    assert torch.allclose(_probs(rows), torch.softmax(out.double(), 1), atol=TOL, rtol=0)
    assert [int(r["prediction"]) for r in rows] == out.argmax(1).tolist()
    # the accuracy the predictor gives is the one evaluation measures
    acc = (out.argmax(1) == y).double().mean().item()
    assert acc == pytest.approx(trainer.evaluate((x, y))["acc"], abs=1e-9)
    # the raw features are far from what the network was trained on: the bare network on them
    # is a different model (this was the 38.6 % against 98.25 %)
    bare = gs.load_model(ckpt, preprocessing=False)
    assert type(bare).__name__ == "MLP"
    with torch.no_grad():
        assert (bare(x) - out).abs().max() > 1.0
        assert torch.allclose(bare(predictor.preprocess(x)), out, atol=TOL, rtol=0)


def test_mnist_loaded_model_takes_uint8_or_unit_float_images(mnist_dir, tmp_path):
    trainer = gs.Trainer(
        run_dir=str(tmp_path / "runs"),
        source="mnist",
        data_path=str(mnist_dir),
        download=False,
        model="simplenet",
        model_args={"hidden_size": 32},
        epochs=1,
        max_steps=20,
        batch_size=64,
        progress=False,
    )
    result = trainer.fit()
    ckpt = result.run_dir / "checkpoints" / "latest"
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:300].copy()
    images = torch.from_numpy(raw)  # (300, 28, 28) uint8, as the file holds them
    unit = images.float() / 255  # what the MNIST source gives: float in [0, 1]
    predictor = gs.load_model(ckpt)
    assert predictor.sample_shape == (1, 28, 28)
    with torch.no_grad():
        out = predictor(images)
        assert torch.allclose(predictor(unit), out, atol=TOL, rtol=0)
        assert torch.allclose(predictor(unit.unsqueeze(1)), out, atol=TOL, rtol=0)
        assert torch.allclose(result.predictor(images), out, atol=TOL, rtol=0)
    assert torch.allclose(trainer.predict(unit.unsqueeze(1)), out, atol=TOL, rtol=0)
    np.savez(tmp_path / "images.npz", X=raw)
    rows = _predict_cli(ckpt, tmp_path / "images.npz", tmp_path / "preds.csv")
    assert torch.allclose(_probs(rows), torch.softmax(out.double(), 1), atol=TOL, rtol=0)
    # the preprocessing is the checkpoint's: the training split's mean/std, not the bare x/255
    mean = _model_json(ckpt)["normalize"]["mean"]["values"][0]
    assert 0.1 < mean < 0.15
    bare = gs.load_model(ckpt, preprocessing=False)
    with torch.no_grad():
        assert not torch.allclose(bare(unit.unsqueeze(1)), out, atol=1e-3)
        assert torch.allclose(bare(prepare_input(images, _model_json(ckpt))), out, atol=TOL)


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """A small run on features far from mean 0 / std 1, with BatchNorm and dropout (so eval
    mode matters)."""
    torch.manual_seed(0)
    x = torch.randn(96, 4) * torch.tensor([10.0, 0.1, 3.0, 50.0]) + 7
    y = (x[:, 0] > 7).long()
    trainer = gs.Trainer(
        run_dir=str(tmp_path_factory.mktemp("tab")),
        model="mlp",
        model_args={"hidden": [8], "batchnorm": True, "dropout": 0.3},
        epochs=2,
        batch_size=16,
        progress=False,
    )
    return trainer, trainer.fit(train=(x, y)), x


def test_the_predictor_holds_the_bare_network_and_the_networks_weights(tabular):
    _, result, _ = tabular
    ckpt = result.run_dir / "checkpoints" / "latest"
    predictor = gs.load_model(ckpt)
    assert type(predictor.network).__name__ == "MLP"
    assert "normalize per-feature mean/std over 4 features" in repr(predictor)
    # state_dict holds the network's weights under the network's keys: model.safetensors'
    own = predictor.network.state_dict()
    assert list(predictor.state_dict()) == list(own)
    assert all(torch.equal(v, own[k]) for k, v in predictor.state_dict().items())
    # ...which load into a fresh network and back into a predictor
    fresh = gs.models.MLP(4, 2, hidden=[8], batchnorm=True, dropout=0.3)
    fresh.load_state_dict(predictor.state_dict())
    other = gs.Predictor(gs.models.MLP(4, 2, hidden=[8], batchnorm=True, dropout=0.3), {})
    other.load_state_dict(fresh.state_dict())
    assert all(torch.equal(v, own[k]) for k, v in other.network.state_dict().items())
    # nested in another module, it saves and loads like any submodule
    outer = nn.Sequential(predictor)
    assert list(outer.state_dict()) == ["0." + k for k in own]
    outer.load_state_dict(outer.state_dict())
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "net\.0\.weight"'):
        predictor.load_state_dict({k: v for k, v in own.items() if k != "net.0.weight"})


def test_result_predictor_equals_trainer_predict_and_the_loaded_predictor(tabular):
    trainer, result, x = tabular
    assert result.model is trainer.model and result.predictor.network is result.model
    with torch.no_grad():
        mine = result.predictor(x)
        loaded = gs.load_model(result.run_dir / "checkpoints" / "latest")(x)
    assert torch.allclose(mine, trainer.predict(x), atol=TOL, rtol=0)
    assert torch.allclose(mine, loaded, atol=TOL, rtol=0)
    # the record is the checkpoint's model.json, built in memory
    assert result.model_info == _model_json(result.run_dir / "checkpoints" / "latest")


def test_load_model_into_an_instance_keeps_the_preprocessing_unless_asked(tabular):
    trainer, result, x = tabular
    ckpt = result.run_dir / "checkpoints" / "latest"
    net = gs.models.MLP(4, 2, hidden=[8], batchnorm=True, dropout=0.3)
    predictor = gs.load_model(ckpt, model=net)
    assert isinstance(predictor, gs.Predictor) and predictor.network is net and not net.training
    with torch.no_grad():
        assert torch.allclose(predictor(x), trainer.predict(x), atol=TOL, rtol=0)
    net2 = gs.models.MLP(4, 2, hidden=[8], batchnorm=True, dropout=0.3)
    assert gs.load_model(ckpt, model=net2, preprocessing=False) is net2


def test_a_callbacks_state_preprocesses_raw_input_as_training_did(tmp_path):
    seen: dict[str, torch.Tensor] = {}

    class Probe(gs.Callback):
        def on_fit_end(self, state: gs.TrainState) -> None:
            seen["prepared"] = state.preprocess(x)
            state.model.eval()
            with torch.no_grad():
                seen["outputs"] = state.model(state.preprocess(x))

    torch.manual_seed(1)
    x = torch.rand(64, 3) * 100
    y = (x[:, 1] > 50).long()
    trainer = gs.Trainer(run_dir=str(tmp_path), epochs=1, batch_size=16, progress=False)
    trainer.callbacks.append(Probe())
    result = trainer.fit(gs.models.MLP(3, 2, hidden=[4]), train=(x, y))
    assert trainer.normalizer is not None
    assert torch.allclose(seen["prepared"], trainer.normalizer(x), atol=TOL, rtol=0)
    assert torch.allclose(seen["outputs"], trainer.predict(x), atol=TOL, rtol=0)
    info = _model_json(result.run_dir / "checkpoints" / "latest")
    assert torch.equal(seen["prepared"], prepare_input(x, info))


def test_state_preprocess_before_fit_says_what_is_missing():
    state = gs.TrainState(epochs=1, batches_per_epoch=1)
    with pytest.raises(RuntimeError, match="set by trainer.fit"):
        state.preprocess(torch.zeros(2, 3))
