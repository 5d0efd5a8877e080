"""predict / eval at the edges: CSV columns by name, bad values, pixels on another scale or in
another dtype, one sample without a batch dimension, shapes that do not fit, and eval of a run
for every loss it could train with."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import gradstep as gs
from gradstep.cli import main
from gradstep.inference import prepare_input
from tests.test_data_edges import write_breast_cancer

QUIET = dict(epochs=1, progress=False, print_diagnosis=False)


def _table(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def _err_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


@pytest.fixture(scope="module")
def cancer_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cancer")
    names = write_breast_cancer(work / "bc.csv")
    trainer = gs.Trainer(
        run_dir=str(work / "runs"), data_path=str(work / "bc.csv"), drop=["id"], **QUIET
    )
    return work, names, trainer.fit()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("digits")
    trainer = gs.Trainer(run_dir=str(work / "runs"), source="digits", **QUIET)
    return work, trainer, trainer.fit()


def _digits() -> np.ndarray:
    return (load_digits().images / 16.0).astype(np.float32)  # as the digits source gives them


# --- 2. CSV columns by name ---------------------------------------------------------------------


def test_predict_and_eval_pick_the_csv_columns_by_name_in_any_order(cancer_run, capsys):
    work, names, result = cancer_run
    run = str(result.run_dir)
    write_breast_cancer(work / "shuffled.csv", order=names[::-1], extra=True)
    assert main(["predict", run, str(work / "bc.csv"), "--out", str(work / "a.csv")]) == 0
    capsys.readouterr()
    assert main(["predict", run, str(work / "shuffled.csv"), "--out", str(work / "b.csv")]) == 0
    err = capsys.readouterr().err
    assert _err_lines(err) == [
        f"gradstep: warning: {work / 'shuffled.csv'}: 2 column(s) the model does not take "
        "are ignored: id, note"
    ]
    header, a = _table(work / "a.csv")
    _, b = _table(work / "b.csv")
    assert header == ["prediction", "prob_0", "prob_1"] and np.array_equal(a, b)
    assert main(["eval", run, "--data", str(work / "bc.csv")]) == 0
    first = capsys.readouterr().out
    assert main(["eval", run, "--data", str(work / "shuffled.csv")]) == 0
    assert capsys.readouterr().out == first  # the same loss and accuracy

    missing = work / "missing.csv"
    write_breast_cancer(missing, order=[n for n in names if n != "mean area"], with_id=False)
    for argv in (
        ["predict", run, str(missing), "--out", str(work / "c.csv")],
        ["eval", run, "--data", str(missing)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"{missing}: no column 'mean area' (the model was trained on it)" in err
    assert not (work / "c.csv").exists()


def test_nan_in_a_file_to_predict_is_named(cancer_run, digits_run, capsys, tmp_path):
    _, names, result = cancer_run
    write_breast_cancer(tmp_path / "nan.csv", with_id=False)
    text = (tmp_path / "nan.csv").read_text().splitlines()
    cells = text[5].split(",")
    cells[names.index("mean texture")] = "nan"
    text[5] = ",".join(cells)
    (tmp_path / "nan.csv").write_text("\n".join(text) + "\n")
    out = str(tmp_path / "p.csv")
    assert main(["predict", str(result.run_dir), str(tmp_path / "nan.csv"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "column 'mean texture' is NaN in row 5 (line 6)" in err and err.count("\n") == 1
    x = _digits()[:10].copy()
    x[3, 2, 5] = np.inf
    np.save(tmp_path / "inf.npy", x)
    run = str(digits_run[2].run_dir)
    assert main(["predict", run, str(tmp_path / "inf.npy"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "inf.npy: X is Inf at sample 3, feature (2, 5)" in err and err.count("\n") == 1


# --- 3. pixels on another scale, pixels in another dtype ---------------------------------------


def test_float_images_on_another_scale_get_one_warning(digits_run, tmp_path, capsys):
    _, _, result = digits_run
    run = str(result.run_dir)
    x = _digits()[:50]
    np.save(tmp_path / "ok.npy", x)
    np.save(tmp_path / "255.npy", x * 255)
    out = str(tmp_path / "p.csv")
    assert main(["predict", run, str(tmp_path / "ok.npy"), "--out", out]) == 0
    assert capsys.readouterr().err == ""
    assert main(["predict", run, str(tmp_path / "255.npy"), "--out", out]) == 0
    lines = _err_lines(capsys.readouterr().err)
    assert (
        len(lines) == 1
        and "float images in 0-255, but the model was trained on [0, 1]" in (lines[0])
    )
    assert "divide them by 255" in lines[0]
    info = json.loads((result.run_dir / "checkpoints" / "best" / "model.json").read_text())
    assert info["input"]["pixels"] is False and info["input"]["range"] == [0.0, 1.0]
    # integer arrays for a model that was not trained on 8-bit pixels: refused, saying how
    np.save(tmp_path / "int.npy", (x * 16).astype(np.int64))
    assert main(["predict", run, str(tmp_path / "int.npy"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "integer input (int64) for a model trained on float features" in err
    assert "x.astype('float32')" in err and err.count("\n") == 1


def test_integer_pixels_are_scaled_like_uint8_for_a_pixel_model(tmp_path):
    d = load_digits()
    images = (d.images * 15).astype(np.uint8)[:, None]  # 8-bit pixels, 0-240
    labels = d.target
    trainer = gs.Trainer(run_dir=str(tmp_path / "runs"), **QUIET)
    result = trainer.fit(train=(images, labels))
    info = json.loads((result.run_dir / "checkpoints" / "best" / "model.json").read_text())
    assert info["input"]["pixels"] is True and info["input"]["range"][1] <= 1.0
    expected = trainer.predict(images[:20])  # uint8 in memory: divided by 255, as in training
    model = gs.load_model(result.run_dir)
    net = getattr(model, "network", model)
    for dtype in (np.uint8, np.int64, np.int32, np.uint16):
        x = prepare_input(images[:20].astype(dtype), info)
        with torch.inference_mode():
            assert torch.allclose(net(x), expected, atol=1e-6), dtype
    too_big = np.zeros((2, 1, 8, 8), np.int64)
    too_big[1, 0, 3, 3] = 4096
    with pytest.raises(gs.UserError, match=r"values in \[0, 4096\].*8-bit pixels \(0-255\)"):
        prepare_input(too_big, info)


def test_mnist_pixels_from_an_idx_path_in_any_integer_dtype(mnist_dir, tmp_path, capsys):
    images = mnist_dir / "t10k-images-idx3-ubyte.gz"
    trainer = gs.Trainer(
        run_dir=str(tmp_path / "runs"),
        data_path=str(images),
        model="simplenet",
        max_steps=3,
        **QUIET,
    )
    result = trainer.fit()
    assert result.config.data.source == "mnist"
    info = json.loads((result.run_dir / "checkpoints" / "best" / "model.json").read_text())
    assert info["input"]["pixels"] is True
    from gradstep.data.idx import read_idx

    raw = read_idx(images)[:16]  # (16, 28, 28) uint8
    np.save(tmp_path / "u8.npy", raw)
    np.save(tmp_path / "i64.npy", raw.astype(np.int64))
    np.save(tmp_path / "one.npy", raw[0])  # (28, 28): one sample without a batch dimension
    outs = {}
    for name in ("u8", "i64", "one"):
        path = tmp_path / f"{name}.npy"
        assert (
            main(["predict", str(result.run_dir), str(path), "--out", str(tmp_path / "p.csv")]) == 0
        )
        outs[name] = _table(tmp_path / "p.csv")[1]
        err = capsys.readouterr().err
        assert (name == "one") == ("one sample of shape (28, 28)" in err), err
    assert np.array_equal(outs["u8"], outs["i64"])
    assert outs["one"][0, 0] == outs["u8"][0, 0]  # the same class, and (batch of 1) close probs
    np.testing.assert_allclose(outs["one"], outs["u8"][:1], atol=1e-6)


# --- 4. inputs the user obviously meant ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (1, 8, 8), (64,)])
def test_one_sample_without_a_batch_dimension_is_predicted_saying_so(
    digits_run, tmp_path, capsys, shape
):
    _, trainer, result = digits_run
    x = _digits()[7]
    np.save(tmp_path / "one.npy", x.reshape(shape))
    out = tmp_path / "p.csv"
    assert main(["predict", str(result.run_dir), str(tmp_path / "one.npy"), "--out", str(out)]) == 0
    lines = _err_lines(capsys.readouterr().err)
    assert lines == [
        f"gradstep: warning: {tmp_path / 'one.npy'}: one sample of shape {shape}, without a "
        "batch dimension: predicted as a batch of 1, shape (1, 1, 8, 8)"
    ]
    _, table = _table(out)
    logits = trainer.predict(torch.from_numpy(x).reshape(1, 1, 8, 8))
    assert table.shape == (1, 11) and table[0, 0] == logits.argmax(1).item()


def test_a_shape_that_does_not_fit_spells_out_the_batch_shape(digits_run, tmp_path, capsys):
    _, _, result = digits_run
    np.save(tmp_path / "bad.npy", np.zeros((5, 7, 7), np.float32))
    out = str(tmp_path / "p.csv")
    assert main(["predict", str(result.run_dir), str(tmp_path / "bad.npy"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "input of shape (5, 7, 7) does not fit the model: it takes a batch of shape " in err
    assert "(N, 1, 8, 8) (N samples of 1×8×8) or (N, 64) flat, or one sample of shape " in err


def test_prepare_input_takes_numpy_and_warns_through_python_or_a_callable(digits_run):
    _, _, result = digits_run
    info = json.loads((result.run_dir / "checkpoints" / "best" / "model.json").read_text())
    from gradstep.inference import InputWarning

    x = _digits()[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = prepare_input(x, info)  # numpy, (8, 8)
    assert batch.shape == (1, 1, 8, 8) and batch.dtype == torch.float32
    assert [w.category for w in caught] == [InputWarning]
    said: list[str] = []
    again = prepare_input(torch.from_numpy(x), info, "x", warn=said.append)
    assert torch.equal(batch, again) and said[0].startswith("x: one sample of shape (8, 8)")
    assert prepare_input(x[None, None], info, warn=said.append).shape == (1, 1, 8, 8)
    assert len(said) == 1  # a batch of one is not a sample without a batch dimension


# --- 6. eval RUN_DIR for every loss the run could train with ------------------------------------

LOSSES = ["cross_entropy", "mse", "l1", "bce_with_logits"]
SOURCES = ["random", "circles", "moons", "digits", "csv", "npz"]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("source", SOURCES)
def test_eval_of_a_run_directory_works_for_every_loss_and_source(
    tmp_path, monkeypatch, capsys, source, loss
):
    if source == "digits" and loss == "bce_with_logits":
        pytest.skip("ten classes are no binary target")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.random((60, 3))
    (tmp_path / "d.csv").write_text(
        "a,b,c,target\n" + "".join(f"{r[0]},{r[1]},{r[2]},{i % 2}\n" for i, r in enumerate(x))
    )
    np.savez(tmp_path / "d.npz", X=x.astype(np.float32), y=np.arange(60) % 2)
    where = {"data_path": f"d.{source}"} if source in ("csv", "npz") else {"source": source}
    if source in ("random", "circles", "moons"):
        where["n"] = 60
    result = gs.Trainer(run_dir="runs", loss=loss, **where, **QUIET).fit()
    capsys.readouterr()
    assert main(["eval", str(result.run_dir)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    loss_line = next(line for line in out.splitlines() if line.startswith("loss: "))
    assert float(loss_line.split()[1]) == pytest.approx(result.history[-1]["val_loss"], rel=1e-4)
