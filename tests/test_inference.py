"""predict / eval from a checkpoint: same outputs as the trainer, training's preprocessing."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import gradstep as gs
from gradstep.cli import main
from gradstep.data.prep import split


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    trainer = gs.Trainer(run_dir=str(runs), source="digits", epochs=3, progress=False)
    return trainer, trainer.fit()


def test_predict_equals_the_trainers_in_memory_predictions(digits_run, tmp_path):
    trainer, result = digits_run
    d = load_digits()
    raw = (d.images / 16.0).astype(np.float32)  # raw: as the digits source gives it
    np.savez(tmp_path / "x.npz", X=raw)
    out = tmp_path / "preds.csv"
    latest = result.run_dir / "checkpoints" / "latest"
    assert main(["predict", str(latest), str(tmp_path / "x.npz"), "--out", str(out)]) == 0
    header, table = _read_csv(out)
    assert header == ["prediction"] + [f"prob_{i}" for i in range(10)]
    logits = trainer.predict(torch.from_numpy(raw).unsqueeze(1))  # normalised as in training
    assert np.array_equal(table[:, 0], logits.argmax(1).numpy())
    probs = torch.softmax(logits.double(), 1).numpy()
    np.testing.assert_allclose(table[:, 1:], probs, rtol=0, atol=1e-12)


def test_raw_input_is_as_accurate_as_validation_and_eval_defaults_to_val(
    digits_run, tmp_path, capsys
):
    _, result = digits_run
    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    _, (xv, yv) = split((x, torch.from_numpy(d.target)), 0.2, seed=0)  # the run's split
    rows = ["target," + ",".join(f"p{i}" for i in range(64))]
    rows += [
        f"{int(t)}," + ",".join(repr(float(v)) for v in s.flatten())
        for s, t in zip(xv, yv, strict=True)
    ]
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n")
    latest = result.run_dir / "checkpoints" / "latest"
    out = tmp_path / "p.csv"
    assert main(["predict", str(latest), str(tmp_path / "val.csv"), "--out", str(out)]) == 0
    _, table = _read_csv(out)
    acc = float(np.mean(table[:, 0] == yv.numpy()))
    assert acc == pytest.approx(result.history[-1]["val_acc"], abs=1e-12)

    capsys.readouterr()
    assert main(["eval", str(latest)]) == 0  # the run's own validation data
    printed = capsys.readouterr().out
    assert f"acc: {result.history[-1]['val_acc']:.2%}" in printed
    assert main(["eval", str(latest), "--data", str(tmp_path / "val.csv")]) == 0
    assert f"acc: {result.history[-1]['val_acc']:.2%}" in capsys.readouterr().out


def test_predict_reads_mnist_idx_files(mnist_dir, tmp_path):
    runs = tmp_path / "runs"
    trainer = gs.Trainer(
        run_dir=str(runs),
        source="mnist",
        data_path=str(mnist_dir),
        model="simplenet",
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        batch_size=64,
        epochs=1,
        progress=False,
    )
    result = trainer.fit()
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    images.write_bytes((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    out = tmp_path / "p.csv"
    assert main(["predict", str(result.run_dir), str(images), "--out", str(out)]) == 0
    _, table = _read_csv(out)
    assert table.shape == (10_000, 11)
    labels = np.frombuffer(
        gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8
    )
    _, (_, val_idx) = split((torch.arange(10_000), torch.arange(10_000)), 0.2, seed=0)
    best = result.summary["best"]
    acc = float(np.mean(table[val_idx.numpy(), 0] == labels[val_idx.numpy()]))
    assert acc == pytest.approx(result.history[-1]["val_acc"], abs=1e-12)
    assert best["step"] == result.summary["global_step"]  # one epoch: best is the last


def test_predict_and_eval_bad_input_is_one_line_exit_2(digits_run, tmp_path, capsys):
    _, result = digits_run
    latest = str(result.run_dir / "checkpoints" / "latest")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    (tmp_path / "x.txt").write_text("hello")
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 1, 8, 8), dtype=np.float32))
    x3 = np.zeros((3, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "badlabels.npz", X=x3, y=np.array([1, 2, 99]))
    cases = [
        (["predict", latest, str(tmp_path / "missing.csv"), "--out", "p.csv"], "not found"),
        (["predict", latest, str(tmp_path / "bad.csv"), "--out", str(tmp_path / "p.csv")], "shape"),
        (["predict", latest, str(tmp_path / "x.txt"), "--out", str(tmp_path / "p.csv")], "format"),
        (["predict", latest, str(tmp_path / "bad.csv"), "--out", "/no/such/dir/p.csv"], "folder"),
        (["eval", latest, "--data", str(tmp_path / "bad.csv")], "labels"),
        (["eval", str(tmp_path)], "not a gradstep checkpoint"),
        (["predict", latest, str(tmp_path / "empty.npz"), "--out", "p.csv"], "no samples"),
        (["eval", latest, "--data", str(tmp_path / "badlabels.npz")], "label 99 is outside"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "p.csv").exists()
    for args in (["predict", latest, "x.csv", "--out", "p.csv", "--batch-size", "0"],):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2


@pytest.mark.parametrize("name", ["empty.npz", "empty.npy"])
def test_an_empty_input_file_is_bad_input(digits_run, tmp_path, capsys, name):
    _, result = digits_run
    (tmp_path / name).write_bytes(b"")
    out = tmp_path / "p.csv"
    assert main(["predict", str(result.run_dir), str(tmp_path / name), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the file is empty" in err and "Traceback" not in err
    assert main(["eval", str(result.run_dir), "--data", str(tmp_path / name)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()
