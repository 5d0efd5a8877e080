"""Config: defaults, validation messages, --set parsing, flat keywords, the resolved file."""

from __future__ import annotations

import tomllib

import pytest

from gradstep.config import (
    FLAT_KEYS,
    Config,
    apply_overrides,
    config_from_flat,
    load_config,
    parse_override,
    to_toml,
    validate_config,
)
from gradstep.errors import UserError


def test_every_key_has_a_default():
    cfg = load_config()
    assert cfg.data.source == "digits" and cfg.model.name == "mlp"
    assert cfg.optim.lr == 1e-3  # adam's default, filled in so the run records it


def test_lr_and_weight_decay_default_by_optimizer():
    assert validate_config({"optim": {"name": "sgd"}}).optim.lr == 0.01
    assert validate_config({"optim": {"name": "adamw"}}).optim.weight_decay == 0.01
    assert validate_config({"optim": {"name": "sgd", "lr": 0.5}}).optim.lr == 0.5


def test_unknown_key_is_named_with_the_closest_valid_one():
    with pytest.raises(UserError, match=r"unknown key \[train\] epoch \(did you mean 'epochs'\?\)"):
        validate_config({"train": {"epoch": 3}})
    with pytest.raises(UserError, match=r"unknown section \[trian\] \(did you mean 'train'\?\)"):
        validate_config({"trian": {}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"train": {"batch_size": "fll"}},
            r"\[train\] batch_size = 'fll': expected a positive integer or \"full\"",
        ),
        (
            {"train": {"batch_size": 0}},
            r"\[train\] batch_size = 0: expected a positive integer or \"full\"",
        ),
        ({"optim": {"lr": -0.1}}, r"\[optim\] lr = -0.1: expected a positive number"),
        ({"train": {"epochs": "ten"}}, r"\[train\] epochs = 'ten': expected a valid integer"),
        ({"optim": {"name": "sgdd"}}, r"\[optim\] name = 'sgdd': expected 'sgd', 'adam'"),
        ({"data": {"val_split": 1.5}}, r"\[data\] val_split = 1.5: expected less than 1"),
        ({"run": {"device": "gpu"}}, r"\[run\] device = 'gpu': expected \"auto\", \"cpu\""),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_was_expected(raw, message):
    with pytest.raises(UserError, match=message):
        validate_config(raw, origin="x.toml")


def test_set_values_parse_as_toml_or_fall_back_to_strings():
    assert parse_override("train.batch_size=full") == (["train", "batch_size"], "full")
    assert parse_override("model.args.hidden=[64,32]") == (["model", "args", "hidden"], [64, 32])
    assert parse_override("optim.lr=0.1") == (["optim", "lr"], 0.1)
    assert parse_override("train.drop_last=true") == (["train", "drop_last"], True)
    assert parse_override("run.name=my run") == (["run", "name"], "my run")
    raw = apply_overrides({"model": {"args": {"hidden": [8]}}}, ["model.args.dropout=0.5"])
    assert raw == {"model": {"args": {"hidden": [8], "dropout": 0.5}}}
    with pytest.raises(UserError, match="expected section.key=value"):
        parse_override("epochs")


def test_set_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 3\nbatch_size = 16\n")
    cfg = load_config(path, ["train.batch_size=full", "model.args.hidden=[64, 32]"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == "full"
    assert cfg.model.args == {"hidden": [64, 32]}


def test_bad_files_are_named(tmp_path):
    with pytest.raises(UserError, match="nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(UserError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_flat_keywords_cover_every_key_once():
    pairs = list(FLAT_KEYS.values())
    assert len(pairs) == len(set(pairs))
    expected = sum(
        len(cls.model_fields) for cls in Config.model_fields.values() for cls in [cls.annotation]
    )
    assert len(pairs) == expected
    cfg = config_from_flat(
        {
            "epochs": 2,
            "optimizer": "sgd",
            "lr": 0.3,
            "batch_size": "full",
            "model": "cnn",
            "data_path": "x.csv",
            "run_dir": "out",
        }
    )
    assert (cfg.train.epochs, cfg.optim.name, cfg.optim.lr) == (2, "sgd", 0.3)
    assert (cfg.model.name, cfg.data.path, cfg.run.dir) == ("cnn", "x.csv", "out")
    with pytest.raises(UserError, match=r"unknown setting 'epoch' \(did you mean 'epochs'\?\)"):
        config_from_flat({"epoch": 2})
    with pytest.raises(UserError, match=r"^lr = -1: expected a positive number"):
        config_from_flat({"lr": -1})


def test_resolved_toml_writes_every_key_and_reads_back_equal():
    cfg = validate_config(
        {
            "model": {"name": "mlp", "args": {"hidden": [8, 4], "dropout": 0.1}},
            "train": {"max_steps": 5},
        }
    )
    text = to_toml(cfg)
    assert "# name = (not set)" in text  # optional keys appear, as comments
    assert validate_config(tomllib.loads(text)) == cfg
    for section, cls in Config.model_fields.items():
        for key in cls.annotation.model_fields:
            if (section, key) == ("model", "args"):
                assert "[model.args]\nhidden = [8, 4]\ndropout = 0.1" in text
            else:
                assert f"{key} = " in text, f"[{section}] {key} missing"
