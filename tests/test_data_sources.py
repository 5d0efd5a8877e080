"""Data sources: built-ins, files, user functions, splits and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep.config import DataSection, validate_config
from gradstep.data import prepare_data
from gradstep.data.prep import Normalizer, split
from gradstep.data.sources import load_source
from gradstep.errors import UserError


def test_random_is_the_tutorials_randn_and_randint():
    (x, y), val, desc = load_source(DataSection(source="random", n=50, features=7, classes=3), 0)
    assert x.shape == (50, 7) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    assert val is None and "random" in desc


@pytest.mark.parametrize("source", ["circles", "moons"])
def test_sklearn_generators_take_n_and_noise(source):
    (x, y), _, _ = load_source(DataSection(source=source, n=120, noise=0.05), seed=1)
    assert x.shape == (120, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    (x2, _), _, _ = load_source(DataSection(source=source, n=120, noise=0.05), seed=1)
    assert torch.equal(x, x2)


def test_digits_are_images_in_unit_range():
    (x, y), _, _ = load_source(DataSection(source="digits"), 0)
    assert x.shape == (1797, 1, 8, 8) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert int(y.max()) == 9


def test_csv_target_by_name_and_val_path(tmp_path):
    (tmp_path / "train.csv").write_text("f1,label,f2\n1,0,2\n3,1,4\n5,0,6\n")
    (tmp_path / "val.csv").write_text("f1,label,f2\n7,1,8\n")
    cfg = DataSection(source="csv", path="train.csv", val_path="val.csv", target="label")
    (x, y), (xv, _yv), _ = load_source(cfg, 0, base_dir=tmp_path)
    assert x.tolist() == [[1, 2], [3, 4], [5, 6]] and y.tolist() == [0, 1, 0]
    assert y.dtype == torch.int64 and xv.tolist() == [[7, 8]]
    with pytest.raises(UserError, match=r"no column \[data\] target = 'lable' \(did you mean"):
        load_source(DataSection(source="csv", path="train.csv", target="lable"), 0, tmp_path)


def test_npz_without_pickle(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((4, 3)), y=np.array([0, 1, 1, 0]))
    (x, y), _, _ = load_source(DataSection(source="npz", path=str(tmp_path / "d.npz")), 0)
    assert x.shape == (4, 3) and x.dtype == torch.float32 and y.tolist() == [0, 1, 1, 0]
    np.savez(tmp_path / "bad.npz", features=np.ones(3))
    with pytest.raises(UserError, match="no array 'X' \\(arrays: features\\)"):
        load_source(DataSection(source="npz", path=str(tmp_path / "bad.npz")), 0)
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(UserError, match="cannot read as .npz"):
        load_source(DataSection(source="npz", path=str(tmp_path / "obj.npz")), 0)


def test_file_function_returns_tensors_or_train_val(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def pair():\n    return torch.zeros(6, 2), torch.tensor([0, 1, 0, 1, 0, 1])\n"
        "def both():\n    return (torch.zeros(6, 2), torch.zeros(6).long()), "
        "(torch.ones(2, 2), torch.ones(2).long())\n"
    )
    train, val, _ = load_source(DataSection(source="mydata.py:pair"), 0, tmp_path)
    assert train[0].shape == (6, 2) and val is None
    train, val, _ = load_source(DataSection(source="mydata.py:both"), 0, tmp_path)
    assert len(train[0]) == 6 and len(val[0]) == 2
    with pytest.raises(UserError, match="has no 'pairs' \\(did you mean 'pair'\\?\\)"):
        load_source(DataSection(source="mydata.py:pairs"), 0, tmp_path)


def test_val_split_is_seeded_disjoint_and_complete():
    x, y = torch.arange(100).float().unsqueeze(1), torch.arange(100)
    (xt, yt), (xv, yv) = split((x, y), 0.2, seed=5)
    (xt2, _), (xv2, _) = split((x, y), 0.2, seed=5)
    (_, _), (xv3, _) = split((x, y), 0.2, seed=6)
    assert len(xv) == 20 and len(xt) == 80
    assert sorted(yt.tolist() + yv.tolist()) == list(range(100))
    assert torch.equal(xv, xv2) and torch.equal(xt, xt2) and not torch.equal(xv, xv3)


def test_normalisation_uses_training_statistics_only():
    cfg = validate_config({"data": {"val_split": 0.5}})
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 3, generator=g), 100 + torch.randn(50, 3, generator=g)])
    y = torch.zeros(100).long()
    data = prepare_data(cfg, "multiclass", (x, y), (x[:50] * 0 + 7, y[:50]))
    xt = data.train[0]
    assert torch.allclose(xt.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(xt.std(0, unbiased=False), torch.ones(3), atol=1e-4)
    # the validation data was transformed with the training mean/std, not its own
    expected = (7 - data.normalizer.mean) / data.normalizer.std
    assert torch.allclose(data.val[0], expected.expand(50, 3))


def test_normaliser_is_per_channel_for_images_and_round_trips():
    x = torch.rand(20, 3, 4, 4)
    norm = Normalizer.fit(x)
    assert norm.mean.shape == (1, 3, 1, 1)
    again = Normalizer.from_state_dict(norm.state_dict())
    assert torch.equal(again(x), norm(x))
    const = Normalizer.fit(torch.ones(5, 2))
    assert torch.equal(const(torch.ones(5, 2)), torch.zeros(5, 2))  # std 0: centred only


def test_float_labels_for_cross_entropy_must_be_integral():
    cfg = validate_config({})
    data = prepare_data(cfg, "multiclass", (torch.zeros(4, 2), torch.tensor([0.0, 1.0, 2.0, 1.0])))
    assert data.train[1].dtype == torch.int64
    with pytest.raises(UserError, match="needs integer class labels, found 0.5"):
        prepare_data(cfg, "multiclass", (torch.zeros(2, 2), torch.tensor([0.5, 1.0])))


def test_val_path_is_refused_for_generated_sources(runs):
    with pytest.raises(UserError, match="val_path is for the mnist, csv and npz sources"):
        gs.Trainer(source="random", val_path="x.csv", run_dir=str(runs)).fit()


def test_npz_that_is_empty_or_one_array_is_named(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(UserError, match="empty.npz: cannot read as .npz: the file is empty"):
        load_source(DataSection(source="npz", path=str(tmp_path / "empty.npz")), 0)
    with open(tmp_path / "one.npz", "wb") as f:
        np.save(f, np.ones(3))  # a .npy under an .npz name
    with pytest.raises(UserError, match="one.npz: cannot read as .npz: it holds one array"):
        load_source(DataSection(source="npz", path=str(tmp_path / "one.npz")), 0)


def test_a_data_function_must_return_data(tmp_path):
    (tmp_path / "d.py").write_text("def load():\n    return 'not data'\n")
    with pytest.raises(UserError, match="did not return training data: it returned str"):
        load_source(DataSection(source="d.py:load"), 0, tmp_path)


def test_labels_that_cannot_be_class_ids_name_the_file(tmp_path):
    (tmp_path / "big.csv").write_text("a,target\n1,0\n2,3000000000\n3,1\n")
    cfg = validate_config({"data": {"source": "csv", "path": "big.csv", "val_split": 0.0}})
    with pytest.raises(UserError, match=r"\[data\] path = 'big.csv': the largest label is 3000"):
        prepare_data(cfg, "multiclass", base_dir=tmp_path)
    # the same integers are fine as regression targets
    data = prepare_data(cfg, "regression", base_dir=tmp_path)
    assert float(data.train[1].max()) == 3e9
