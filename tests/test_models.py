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


# --- models the user built: gs.save_init_args (issue 14, point 9) -----------------------------


class Recorded(nn.Module):
    def __init__(self, width: int, hidden=(4, 2), act: type = nn.ReLU, **extra) -> None:
        super().__init__()
        gs.save_init_args(self)
        width = width * 2  # reassigned after the call: the recorded value is the one given
        self.fc = nn.Linear(width, 2)


class Child(Recorded):
    def __init__(self, depth: int, scale: float = 0.5) -> None:
        super().__init__(width=depth + 1)


def test_save_init_args_records_what_the_constructor_was_given():
    from gradstep.models.instance import recorded_init_args

    net = Recorded(3, flag=True)
    # tuples become lists, **kwargs are recorded by name; a default that is not data is left out
    assert recorded_init_args(net) == {"width": 3, "hidden": [4, 2], "flag": True}
    # in a subclass, the class being built: the outermost __init__'s arguments
    assert recorded_init_args(Child(5)) == {"depth": 5, "scale": 0.5}
    assert gs.models.MLP(4, 3).__dict__["_gradstep_init_args"]["hidden"] == [64]


def test_save_init_args_refuses_what_a_checkpoint_cannot_hold():
    with pytest.raises(TypeError, match=r"argument act = .*cannot be recorded"):
        Recorded(3, act=nn.Tanh)
    with pytest.raises(TypeError, match=r"extra\['w'\]"):
        Recorded(3, extra={"w": torch.zeros(2)})
    with pytest.raises(TypeError, match="inside the model's __init__"):
        gs.save_init_args(nn.Linear(2, 2))

    class Star(nn.Module):
        def __init__(self, *sizes: int) -> None:
            super().__init__()
            gs.save_init_args(self)

    with pytest.raises(TypeError, match=r"\*sizes"):
        Star(1, 2)

    class Ignored(nn.Module):
        def __init__(self, width: int, log: object = None) -> None:
            super().__init__()
            self.args = gs.save_init_args(self, ignore=["log"])

    assert Ignored(2, log=print).args == {"width": 2}


def test_instance_names_are_what_load_model_can_find(tmp_path, monkeypatch):
    from gradstep.models.instance import instance_name, unwrap_compiled

    assert instance_name(MLP) == "mlp"  # the zoo's own name
    assert instance_name(Recorded) == "tests.test_models:Recorded"  # a package: dotted
    assert instance_name(nn.Linear) == "torch.nn.modules.linear:Linear"
    # a plain module file inside the working directory: file.py:Class, relative to it
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "user_nets_ab12.py").write_text("class Net:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "sub"))
    import user_nets_ab12

    assert instance_name(user_nets_ab12.Net, tmp_path) == "sub/user_nets_ab12.py:Net"
    monkeypatch.chdir(tmp_path / "sub")
    assert instance_name(user_nets_ab12.Net) == "user_nets_ab12.py:Net"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert instance_name(user_nets_ab12.Net, outside) == "user_nets_ab12:Net"
    # a torch.compile'd model is the module it wraps
    net = MLP(2, 2)
    assert unwrap_compiled(torch.compile(net, backend="eager")) is net
    assert unwrap_compiled(net) is net
