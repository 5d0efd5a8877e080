"""The model zoo, argument inference and loading user models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradstep as gs
from gradstep.errors import UserError
from gradstep.models import CNN, MLP, DataShape, SimpleNet, build_model


def test_zoo_models_accept_flat_and_image_input():
    assert SimpleNet(784, 10)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    mlp = MLP(64, 10, hidden=[32, 16], batchnorm=True, dropout=0.1)
    assert mlp(torch.zeros(3, 64)).shape == (3, 10)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in mlp.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in mlp.modules()) == 2
    assert CNN(1, 10, image_size=28)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert CNN(1, 10, image_size=8)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_arguments_are_inferred_from_the_data_unless_given():
    _, args = build_model("simplenet", {"hidden_size": 32}, DataShape((1, 28, 28), 10))
    assert args == {"hidden_size": 32, "input_size": 784, "num_classes": 10}
    _, args = build_model("cnn", {}, DataShape((1, 8, 8), 10))
    assert args == {"in_channels": 1, "num_classes": 10, "image_size": 8}
    _, args = build_model("mlp", {"num_classes": 4}, DataShape((5,), 3))
    assert args["num_classes"] == 4  # what the config says wins


def test_package_module_class_with_inferred_torch_arguments():
    model, args = build_model("torch.nn:Linear", {}, DataShape((6,), 3))
    assert isinstance(model, nn.Linear) and args == {"in_features": 6, "out_features": 3}


def test_file_model_is_found_beside_the_config(tmp_path, runs):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, input_size, num_classes, width=8):\n"
        "        super().__init__()\n"
        "        self.f = nn.Sequential(nn.Flatten(), nn.Linear(input_size, width), nn.ReLU(),\n"
        "                               nn.Linear(width, num_classes))\n"
        "    def forward(self, x):\n"
        "        return self.f(x)\n"
    )
    (tmp_path / "exp.toml").write_text(
        f'[run]\ndir = "{runs}"\n[model]\nname = "net.py:Net"\n[model.args]\nwidth = 12\n'
        "[train]\nepochs = 1\n"
    )
    result = gs.Trainer.from_config(tmp_path / "exp.toml").fit()
    assert result.config.model.args == {"width": 12, "input_size": 64, "num_classes": 10}
    assert result.run_dir.name == "exp"


def test_bad_model_specs_are_user_errors():
    with pytest.raises(UserError, match="unknown model \\(did you mean 'cnn'\\?\\)"):
        build_model("cn", {}, None)
    with pytest.raises(UserError, match="'cnn' needs image input"):
        build_model("cnn", {}, DataShape((64,), 10))
    with pytest.raises(UserError, match="is not a torch.nn.Module subclass"):
        build_model("torch.nn.functional:relu", {}, None)
    with pytest.raises(UserError, match="input_size is required by 'mlp'"):
        build_model("mlp", {"num_classes": 2}, None)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (MLP, {"hidden": [0]}, r"^hidden = \[0\]: expected a list of positive integers"),
        (MLP, {"hidden": [-1]}, r"^hidden = \[-1\]: expected a list of positive integers"),
        (MLP, {"hidden": 64}, r"^hidden = 64: expected a list of positive integers"),
        (MLP, {"dropout": float("nan")}, r"^dropout = nan: expected a number in \[0, 1\)"),
        (MLP, {"dropout": 1.0}, r"^dropout = 1.0: expected a number in \[0, 1\)"),
        (SimpleNet, {"hidden_size": 0}, r"^hidden_size = 0: expected a positive integer"),
        (CNN, {"channels": [8, 0]}, r"^channels = \[8, 0\]: expected a list of positive"),
    ],
)
def test_zoo_constructors_refuse_sizes_torch_takes_silently(cls, kwargs, message):
    """torch builds a width-0 layer without a word and ignores a NaN dropout; the zoo says."""
    with pytest.raises(ValueError, match=message):
        cls(1 if cls is CNN else 8, 3, **kwargs)


def test_build_model_names_the_model_arg_and_the_size():
    shape = DataShape((8,), 3)
    with pytest.raises(UserError, match=r"^\[model.args\] hidden = \[0\]: expected a list"):
        build_model("mlp", {"hidden": [0]}, shape)
    with pytest.raises(UserError, match=r"^\[model.args\] input_size = 0: .*inferred from"):
        build_model("mlp", {}, DataShape((0,), 3))
    with pytest.raises(UserError, match=r"hidden = \[100000, 100000\]: 'mlp' would have 10,0"):
        build_model("mlp", {"hidden": [100_000, 100_000]}, shape)  # counted, never allocated
    with pytest.raises(UserError, match=r"^\[model.args\] out_features = -1: 'torch.nn:Linear'"):
        build_model("torch.nn:Linear", {"out_features": -1}, shape)
    # legit edges: no hidden layer (logistic regression), NumPy integers, dropout 0
    import numpy as np

    model, _ = build_model("mlp", {"hidden": [], "dropout": 0.0}, shape)
    assert model(torch.zeros(2, 8)).shape == (2, 3)
    assert MLP(8, 3, hidden=[np.int64(4)])(torch.zeros(2, 8)).shape == (2, 3)


def test_the_size_check_draws_no_random_numbers():
    """The meta-device count before the real build must not shift a seeded run's init."""
    torch.manual_seed(0)
    direct = MLP(8, 3, hidden=[16])
    torch.manual_seed(0)
    built, _ = build_model("mlp", {"hidden": [16]}, DataShape((8,), 3))
    for a, b in zip(direct.state_dict().values(), built.state_dict().values(), strict=True):
        assert torch.equal(a, b)
