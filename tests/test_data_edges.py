"""The data's edges at training time: columns by name, bad values, settings never ignored,
generic Datasets (class counts, dict and tuple samples), normalisation constants given."""

from __future__ import annotations

import csv
import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import Dataset

import gradstep as gs
from gradstep.cli import main
from gradstep.config import DataSection, validate_config
from gradstep.data import prepare_data
from gradstep.data.sources import load_source
from gradstep.errors import UserError

QUIET = dict(epochs=1, progress=False, print_diagnosis=False)


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("gradstep: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Epoch [" not in out
    assert "learning rate" not in err and "lr" not in err.split(": ", 2)[-1].split()
    return err


def write_breast_cancer(path: Path, *, order=None, extra: bool = False, with_id: bool = True):
    """scikit-learn's breast-cancer table as a CSV with its feature names (and an id column)."""
    d = load_breast_cancer()
    names = list(d.feature_names)
    cols = order if order is not None else names
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow((["id"] if with_id else []) + cols + ["target"] + (["note"] if extra else []))
        for i, (row, t) in enumerate(zip(d.data, d.target, strict=True)):
            values = dict(zip(names, row.tolist(), strict=True))
            w.writerow(
                ([f"patient-{i}"] if with_id else [])
                + [repr(values[c]) for c in cols]
                + [int(t)]
                + (["free text, not a number"] if extra else [])
            )
    return names


# --- 2. CSV columns by name ---------------------------------------------------------------------


def test_csv_feature_columns_are_chosen_by_name_and_recorded(tmp_path):
    names = write_breast_cancer(tmp_path / "bc.csv")
    trainer = gs.Trainer(
        run_dir=str(tmp_path / "runs"), data_path=str(tmp_path / "bc.csv"), drop=["id"], **QUIET
    )
    result = trainer.fit()  # the id column (text) is dropped, never read as a number
    assert result.config.data.source == "csv"  # inferred from the file name
    info = json.loads((result.run_dir / "checkpoints" / "best" / "model.json").read_text())
    assert info["input"]["features"] == names and info["input"]["sample_shape"] == [30]
    picked = ["worst area", "mean radius"]
    raw = {"path": str(tmp_path / "bc.csv"), "features": picked, "normalize": False}
    data = prepare_data(validate_config({"data": {**raw, "val_split": 0.0}}), "multiclass")
    d = load_breast_cancer()
    expected = d.data[:, [names.index(p) for p in picked]].astype(np.float32)
    assert data.features == tuple(picked)
    assert np.array_equal(data.train[0].numpy(), expected)


def test_features_and_drop_pick_columns_in_the_order_given(tmp_path):
    (tmp_path / "t.csv").write_text("id,a,b,target,c\nx1,1,2,0,3\nx2,4,5,1,6\nx3,7,8,0,9\n")
    base = {"source": "csv", "path": "t.csv"}
    (x, y), _, _ = load_source(DataSection(**base, features=["c", "a"]), 0, tmp_path)
    assert x.tolist() == [[3, 1], [6, 4], [9, 7]] and y.tolist() == [0, 1, 0]
    (x, _), _, _ = load_source(DataSection(**base, drop=["id"]), 0, tmp_path)
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(UserError, match=r"t.csv: no column 'bb' \(named in \[data\] features\)"):
        load_source(DataSection(**base, features=["a", "bb"]), 0, tmp_path)
    with pytest.raises(UserError, match=r"\[data\] drop names 'idd'.*did you mean 'id'"):
        load_source(DataSection(**base, drop=["idd"]), 0, tmp_path)
    with pytest.raises(UserError, match=r"include the target 'target'"):
        load_source(DataSection(**base, features=["a", "target"]), 0, tmp_path)
    with pytest.raises(UserError, match=r"t.csv:2: column 'id': 'x1' is not a number"):
        load_source(DataSection(**base), 0, tmp_path)  # without drop, the id is a feature
    with pytest.raises(UserError, match=r"features = \['a'\] names CSV columns, but source"):
        validate_config({"data": {"source": "npz", "path": "x.npz", "features": ["a"]}})
    with pytest.raises(UserError, match="features and drop both choose columns"):
        validate_config({"data": {"path": "t.csv", "features": ["a"], "drop": ["id"]}})


def test_a_validation_file_gives_the_training_files_columns_by_name(tmp_path):
    (tmp_path / "train.csv").write_text("a,b,target\n1,2,0\n3,4,1\n5,6,0\n")
    (tmp_path / "val.csv").write_text("target,b,extra,a\n1,8,99,7\n")
    cfg = DataSection(path="train.csv", val_path="val.csv")
    assert cfg.source == "csv"
    (x, _), (xv, yv), _ = load_source(cfg, 0, tmp_path)
    assert x.tolist()[0] == [1, 2] and xv.tolist() == [[7, 8]] and yv.tolist() == [1]


def test_features_as_an_integer_is_the_random_sources_count(tmp_path):
    old = DataSection(source="random", features=7, n=20)
    assert old.n_features == 7 and old.features is None
    (x, _), _, desc = load_source(old, 0)
    assert x.shape == (20, 7) and "7 features" in desc
    assert load_source(DataSection(source="random", n_features=5, n=20), 0)[0][0].shape == (20, 5)
    assert gs.Trainer(source="random", features=3).config.data.n_features == 3
    with pytest.raises(UserError, match="features = 5 and n_features = 6: give one"):
        validate_config({"data": {"source": "random", "features": 5, "n_features": 6}})
    with pytest.raises(UserError, match=r"features = 0: expected a feature count \(n_features\)"):
        validate_config({"data": {"source": "random", "features": 0}})


# --- 3. bad values in the data ------------------------------------------------------------------


def _nan_files(work: Path) -> None:
    (work / "feat.csv").write_text("a,b,target\n1,2,0\n3,nan,1\n\n4,inf,0\n5,6,1\n")
    (work / "targ.csv").write_text("a,b,target\n1,2,0.5\n3,4,inf\n5,6,1.5\n7,8,2.5\n")
    x = np.random.default_rng(0).random((20, 1, 4, 4)).astype(np.float32)
    x[7, 0, 2, 3] = np.nan
    np.savez(work / "x.npz", X=x, y=np.arange(20) % 2)
    y = np.linspace(0, 1, 20)
    y[4] = -np.inf
    np.savez(work / "y.npz", X=np.ones((20, 3), np.float32), y=y)
    (work / "nanfn.py").write_text(
        "import torch\n"
        "def load():\n"
        "    x = torch.zeros(10, 3)\n"
        "    x[6, 1] = float('nan')\n"
        "    return x, torch.arange(10) % 2\n"
    )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.path=feat.csv"], "feat.csv: column 'b' is NaN in row 2 (line 3) (and 1 more"),
        (
            ["data.path=targ.csv", "train.loss=mse"],
            "targ.csv: column 'target' is Inf in row 2 (line 3)",
        ),
        (["data.path=x.npz"], "[data] path = 'x.npz': X is NaN at sample 7, feature (0, 2, 3)"),
        (["data.path=y.npz", "train.loss=mse"], "[data] path = 'y.npz': y is -Inf at sample 4"),
        (["data.source=nanfn.py:load"], "nanfn.py:load': X is NaN at sample 6, feature 1"),
    ],
    ids=["csv-feature", "csv-target", "npz-X", "npz-y", "function"],
)
def test_nan_or_inf_in_the_data_is_exit_2_before_any_run_directory(
    tmp_path, monkeypatch, capsys, sets, message
):
    monkeypatch.chdir(tmp_path)
    _nan_files(tmp_path)
    argv = ["fit", "--set", "run.dir=runs", "--set", "train.epochs=1"]
    for s in sets:
        argv += ["--set", s]
    err = _one_line_exit_2(capsys, argv)
    assert message in err and "fill them in or drop those" in err, err
    assert not (tmp_path / "runs").exists()


def test_nan_in_tensors_arrays_and_dataset_probes_is_bad_input(tmp_path):
    runs = tmp_path / "runs"
    x = torch.randn(30, 4)
    x[3, 2] = float("nan")
    y = torch.zeros(30).long()
    with pytest.raises(UserError, match=r"^training data: X is NaN at sample 3, feature 2"):
        gs.Trainer(run_dir=str(runs), **QUIET).fit(train=(x, y))
    xv = np.ones((5, 4), np.float32)
    xv[1, 0] = np.inf
    with pytest.raises(UserError, match=r"^validation data: X is Inf at sample 1, feature 0"):
        gs.Trainer(run_dir=str(runs), **QUIET).fit(train=(x.nan_to_num(), y), val=(xv, y[:5]))
    reg = torch.linspace(0, 1, 30)
    reg[9] = float("nan")
    with pytest.raises(UserError, match=r"^training data: y is NaN at sample 9"):
        gs.Trainer(run_dir=str(runs), loss="mse", **QUIET).fit(train=(x.nan_to_num(), reg))

    class Bad(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.full((3,), float("nan") if i == 1 else 0.0), 0

    with pytest.raises(UserError, match=r"training data: the input of its first samples is NaN"):
        gs.Trainer(run_dir=str(runs), **QUIET).fit(train=Bad())
    assert not runs.exists()


# --- 5. settings never silently ignored ---------------------------------------------------------


def test_a_data_path_with_the_default_source_infers_the_source(tmp_path, mnist_dir):
    (tmp_path / "t.csv").write_text(
        "a,b,target\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    )
    np.savez(tmp_path / "t.npz", X=np.random.rand(20, 3).astype(np.float32), y=np.arange(20) % 2)
    for name, source in (("t.csv", "csv"), ("t.npz", "npz")):
        result = gs.Trainer(
            run_dir=str(tmp_path / "runs"), data_path=str(tmp_path / name), **QUIET
        ).fit()
        assert result.config.data.source == source
        assert result.summary["data"]["description"].startswith(f"{source}: 20 ")
        assert f'source = "{source}"' in (result.run_dir / "config.toml").read_text()
    images = mnist_dir / "t10k-images-idx3-ubyte.gz"
    cfg = validate_config({"data": {"path": str(images)}})
    assert cfg.data.source == "mnist"
    data = prepare_data(cfg, "multiclass")
    assert data.train[0].shape[1:] == (1, 28, 28) and data.pixels
    assert len(data.train[0]) + len(data.val[0]) == 10_000


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.path=x.npy"], "path = 'x.npy': a .npy file holds one array"),
        (["data.path=x.parquet"], "path = 'x.parquet': cannot tell the source from the file name"),
        (["data.target=label"], "target = 'label' is set but not path, so the default example"),
        (["data.val_path=v.csv"], "val_path = 'v.csv' is set but not path"),
        (["data.features=['a']"], "features = ['a'] is set but not path"),
        (
            ["data.source=random", "data.path=t.csv"],
            "path = 't.csv' is not used by source = 'random'",
        ),
    ],
    ids=["npy", "unknown-extension", "target", "val_path", "features", "generated"],
)
def test_data_settings_the_default_source_would_ignore_are_exit_2(
    tmp_path, monkeypatch, capsys, sets, message
):
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--set", "run.dir=runs"]
    for s in sets:
        argv += ["--set", s]
    err = _one_line_exit_2(capsys, argv)
    assert message in err, err
    assert not (tmp_path / "runs").exists()


# --- 10. generic Datasets -----------------------------------------------------------------------


class Counted(Dataset):
    """A Dataset that counts the samples read in this process, optionally logging worker reads."""

    def __init__(self, n=200, classes=3, log: Path | None = None, kind="pair"):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.arange(n) % classes
        self.reads, self.log, self.kind = 0, log, kind

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        if self.log is not None and torch.utils.data.get_worker_info() is not None:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")
        x, y = self.x[i], int(self.y[i])
        if self.kind == "dict":
            return {"label": y, "pixels": x, "id": i}
        if self.kind == "triple":
            return x, f"sample-{i}", y
        return x, y


class WithTargets(Counted):
    @property
    def targets(self):
        return self.y


class WithClasses(Counted):
    classes = ("a", "b", "c")


class ReadsAtStart(gs.Callback):
    def __init__(self, ds):
        self.ds, self.reads = ds, None

    def on_fit_start(self, state):
        self.reads = self.ds.reads


@pytest.mark.parametrize("how", ["targets", "classes", "num_classes"])
def test_the_class_count_of_a_dataset_is_read_without_reading_its_samples(tmp_path, how):
    ds = {"targets": WithTargets, "classes": WithClasses, "num_classes": Counted}[how]()
    args = {"num_classes": 3} if how == "num_classes" else {}
    seen = ReadsAtStart(ds)
    trainer = gs.Trainer(run_dir=str(tmp_path / "runs"), model_args=args, callbacks=[seen], **QUIET)
    result = trainer.fit(train=ds)  # val_split = 0.2 of it: Subsets of the Dataset
    assert result.config.model.args["num_classes"] == 3
    assert seen.reads is not None and seen.reads <= 16, seen.reads  # probes, not a pass


def test_a_dataset_without_class_attributes_is_scanned_in_workers_saying_so(tmp_path, capfd):
    log = tmp_path / "reads.log"
    ds = Counted(n=120, log=log)
    seen = ReadsAtStart(ds)
    trainer = gs.Trainer(run_dir=str(tmp_path / "runs"), num_workers=2, callbacks=[seen], **QUIET)
    log_at_start = []
    seen.on_fit_start = lambda state: log_at_start.append(log.read_text() if log.exists() else "")
    result = trainer.fit(train=ds)
    assert result.config.model.args["num_classes"] == 3
    err = capfd.readouterr().err
    assert err.count("counting the classes: reading the targets of all 120 samples") == 1, err
    assert "set [model.args] num_classes" in err
    pids = set(log_at_start[0].split())
    assert pids and str(os.getpid()) not in pids  # read by the configured workers
    assert ds.reads <= 16  # the main process read only its probes and fingerprint samples


def test_dict_and_tuple_samples_are_taken_with_the_keys_named(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    result = gs.Trainer(run_dir=runs, input_key="pixels", target_key="label", **QUIET).fit(
        train=Counted(kind="dict")
    )
    assert result.config.model.args["input_size"] == 4 and result.history
    result = gs.Trainer(run_dir=runs, input_key=0, target_key=2, **QUIET).fit(
        train=WithTargets(kind="triple")
    )
    assert result.config.model.args["num_classes"] == 3
    with pytest.raises(UserError, match=r"samples are dicts \(keys 'label', 'pixels', 'id'\), not"):
        gs.Trainer(run_dir=runs, **QUIET).fit(train=Counted(kind="dict"))
    with pytest.raises(UserError, match=r"tuples of 3 items.*input_key = 0, target_key = 2"):
        gs.Trainer(run_dir=runs, **QUIET).fit(train=Counted(kind="triple"))
    with pytest.raises(UserError, match=r"input_key = 'pixel' is not in the samples.*'pixels'"):
        gs.Trainer(run_dir=runs, input_key="pixel", target_key="label", **QUIET).fit(
            train=Counted(kind="dict")
        )
    with pytest.raises(UserError, match="input_key is set but not target_key"):
        gs.Trainer(input_key="pixels")
    with pytest.raises(UserError, match="the data is in-memory data"):
        gs.Trainer(run_dir=runs, input_key=0, target_key=1, **QUIET).fit(
            train=(torch.zeros(8, 2), torch.zeros(8).long())
        )


# --- 1 (part). normalisation constants given ----------------------------------------------------


def test_normalize_mean_std_sets_the_constants_instead_of_fitting_them(tmp_path):
    runs = str(tmp_path / "runs")
    trainer = gs.Trainer(run_dir=runs, source="digits", normalize=[0.1307, 0.3081], **QUIET)
    result = trainer.fit()
    assert trainer.normalizer.mean.flatten().tolist() == pytest.approx([0.1307])
    assert trainer.normalizer.std.flatten().tolist() == pytest.approx([0.3081])
    info = json.loads((result.run_dir / "checkpoints" / "best" / "model.json").read_text())
    assert info["normalize"]["mean"]["values"] == pytest.approx([0.1307])
    written = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert written["data"]["normalize"] == [0.1307, 0.3081]
    x = torch.rand(5, 1, 8, 8)
    from gradstep.inference import prepare_input

    assert torch.allclose(prepare_input(x, info), (x - 0.1307) / 0.3081)
    # per feature, for tabular data
    g = torch.Generator().manual_seed(0)
    xt, yt = torch.randn(40, 2, generator=g), torch.arange(40) % 2
    cfg = validate_config({"data": {"normalize": [[1.0, -1.0], [2.0, 4.0]], "val_split": 0.0}})
    data = prepare_data(cfg, "multiclass", (xt, yt))
    assert data.normalizer.mean.shape == (1, 2) and data.normalizer.given
    expected = (xt - torch.tensor([1.0, -1.0])) / torch.tensor([2.0, 4.0])
    assert torch.allclose(data.train[0], expected)
    bad = validate_config({"data": {"normalize": [[0.5, 0.5, 0.5], [0.2, 0.2, 0.2]]}})
    with pytest.raises(UserError, match=r"normalize = \[mean, std\]: 3 values each, but .* 1 ch"):
        prepare_data(bad, "multiclass", (torch.rand(6, 1, 4, 4), torch.arange(6) % 2))
    with pytest.raises(UserError, match=r"is not an in-memory float tensor"):
        prepare_data(cfg, "multiclass", Counted())
    with pytest.raises(UserError, match=r"\[data\] normalize = \[0.5, 0.0\]: expected true, false"):
        validate_config({"data": {"normalize": [0.5, 0.0]}})
    assert validate_config({"data": {"normalize": False}}).data.normalize is False
    assert prepare_data(validate_config({}), "multiclass", (xt, yt)).normalizer.given is False


def _pixels_fn_module(folder: Path) -> None:
    (folder / "pixels_data.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    g = np.random.default_rng(0)\n"
        "    return g.integers(0, 256, (40, 6, 5), dtype=np.uint8), np.arange(40) % 2\n"
    )


@pytest.mark.parametrize("how", ["npz", "function", "tensors"])
def test_uint8_images_without_a_channel_are_recorded_as_pixels_and_one_grey_channel(
    tmp_path, monkeypatch, how
):
    """(N, H, W) uint8 from an npz, a data function or in memory: divided by 255, recorded as
    8-bit pixels in model.json, and normalised with one mean/std — not one per image row."""
    g = np.random.default_rng(0)
    x = g.integers(0, 256, (40, 6, 5), dtype=np.uint8)
    x[:, 0] = 255  # row 0 bright: per-row statistics would differ from the image's
    y = np.arange(40) % 2
    settings = dict(run_dir=str(tmp_path / "runs"), val_split=0.0, **QUIET)
    if how == "npz":
        np.savez(tmp_path / "d.npz", X=x, y=y)
        result = gs.Trainer(data_path=str(tmp_path / "d.npz"), **settings).fit()
    elif how == "function":
        monkeypatch.chdir(tmp_path)
        _pixels_fn_module(tmp_path)
        x = np.random.default_rng(0).integers(0, 256, (40, 6, 5), dtype=np.uint8)
        result = gs.Trainer(source="pixels_data.py:make", **settings).fit()
    else:
        result = gs.Trainer(**settings).fit(train=(torch.from_numpy(x), torch.from_numpy(y)))
    info = json.loads((result.run_dir / "checkpoints" / "latest" / "model.json").read_text())
    assert info["input"]["pixels"] is True
    unit = x.astype(np.float64) / 255
    assert info["normalize"]["mean"]["values"] == pytest.approx([unit.mean()], rel=1e-5)
    assert info["normalize"]["std"]["values"] == pytest.approx([unit.std()], rel=1e-5)
    predictor = gs.load_model(result.run_dir / "checkpoints" / "latest")
    with torch.no_grad():
        raw = predictor(torch.from_numpy(x))  # 8-bit pixels as the file holds them
        assert torch.allclose(predictor(torch.from_numpy(x).float() / 255), raw, atol=1e-6)
