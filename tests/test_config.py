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
                assert "[model.args]\n" in text
                assert tomllib.loads(text)["model"]["args"] == {"hidden": [8, 4], "dropout": 0.1}
            else:
                assert f"{key} = " in text, f"[{section}] {key} missing"


def _float_keys() -> list[tuple[str, str]]:
    """Every (section, key) whose type admits a float."""
    return [
        (section, key)
        for section, field in Config.model_fields.items()
        for key, f in field.annotation.model_fields.items()
        if "float" in str(f.annotation)
    ]


@pytest.mark.parametrize(("section", "key"), _float_keys(), ids="{0[0]}.{0[1]}".format)
@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_no_float_key_takes_nan_or_infinity(section, key, bad):
    """pydantic lets inf through Field(ge=0) and NaN through a bare float; no key means
    anything by them, so each is refused naming the key."""
    value = [bad, bad] if key == "betas" else bad
    with pytest.raises(UserError, match=rf"^x.toml: \[{section}\] {key} = "):
        validate_config({section: {key: value}}, origin="x.toml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"optim": {"betas": [0.9, 1.0]}}, r"betas = \[0.9, 1.0\]: expected two finite numbers"),
        ({"optim": {"betas": [0.9]}}, r"betas = \[0.9\]: expected two finite numbers in"),
        ({"run": {"seed": 2**63}}, r"seed = 9223372036854775808: expected an integer in"),
        ({"run": {"name": "a\nb"}}, r"name = 'a\\nb': expected a directory name without control"),
        ({"run": {"name": "é" * 101}}, r"at most 200 bytes \(it has 202\)"),
        ({"schedule": {"milestones": [0]}}, r"milestones = \[0\]: expected a list of positive"),
        ({"data": {"n": 10**9}}, r"\[data\] n = 1000000000: expected a number of samples from 1"),
    ],
)
def test_values_no_machine_or_file_system_can_use_are_refused(raw, message):
    with pytest.raises(UserError, match=message):
        validate_config(raw)


def test_legit_edges_still_pass():
    cfg = validate_config(
        {
            "run": {"seed": 2**63 - 1, "name": "x" * 200},
            "optim": {"betas": [0.0, 0.999]},
            "schedule": {"milestones": [1, 1, 5]},
            "data": {"n": 10**8},
        }
    )
    assert validate_config(tomllib.loads(to_toml(cfg))) == cfg  # the largest seed reads back
    assert validate_config({"run": {"name": "x" * 200 + "-2"}})  # a taken name's suffix
    assert validate_config({"run": {"name": "my run (v2) – é"}})


def test_the_trainer_name_keyword_is_one_path_component():
    with pytest.raises(UserError, match=r"^name = '\.\./x': expected one directory name"):
        config_from_flat({"name": "../x"})
    with pytest.raises(UserError, match=r"^seed = -1: expected an integer in \[0, 2\*\*63\)"):
        config_from_flat({"seed": -1})


def test_a_config_file_that_is_not_utf8_or_nests_too_deep_is_named(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b"[train]\nepochs = 1\n\xff\xfe\n")
    with pytest.raises(UserError, match=r"bin.toml: not valid TOML: not UTF-8 text \(byte 0xff"):
        load_config(tmp_path / "bin.toml")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(UserError, match="deep.toml: "):
        load_config(tmp_path / "deep.toml")
    # --set reads its value as TOML; one nested too deeply is a plain string, refused by its key
    path, value = parse_override("model.args.hidden=" + "[" * 500 + "]" * 500)
    assert path == ["model", "args", "hidden"] and value.startswith("[[[")


def _listed(value):
    """A value as TOML holds it: tuples are arrays."""
    if isinstance(value, list | tuple):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


def test_every_default_reads_back_from_the_resolved_toml_key_by_key():
    cfg = validate_config({})
    back = tomllib.loads(to_toml(cfg))
    for section, values in cfg.model_dump().items():
        for key, value in values.items():
            if value is None:  # unset: a comment, and absent from the table
                assert key not in back[section]
                assert f"# {key} = (not set)" in to_toml(cfg)
            else:
                assert back[section][key] == _listed(value), f"[{section}] {key}"
    assert validate_config(back) == cfg


def test_awkward_values_round_trip_through_the_resolved_toml():
    awkward = {
        "run": {"name": 'say "hi" it\'s', "dir": "runs/ünïcødé 名前 \\ back"},
        "model": {
            "name": "mlp",
            "args": {
                "hidden": [8, 4],
                "nested": {"deeper": {"k": [1.5, -2], "s": "x'y\"z"}, "flag": False},
                "big": float("inf"),
                "tiny": -float("inf"),
                "exp": 1e-300,
                "multi": "line one\nline two",
                "list of tables": [{"a": 1}, {"b": "2"}],
            },
        },
        "train": {"clip_norm": 1e30, "epochs": 3},
        "optim": {"lr": 0.1 + 0.2},  # no rounding on the way out
    }
    cfg = validate_config(awkward)
    text = to_toml(cfg)
    assert validate_config(tomllib.loads(text)) == cfg
    args = tomllib.loads(text)["model"]["args"]
    assert args["big"] == float("inf") and args["nested"]["deeper"]["s"] == "x'y\"z"
    assert tomllib.loads(text)["run"]["dir"] == "runs/ünïcødé 名前 \\ back"
    assert tomllib.loads(text)["optim"]["lr"] == 0.1 + 0.2


def test_a_none_inside_model_args_is_refused_by_name_not_dropped():
    cfg = validate_config({"model": {"name": "mlp", "args": {"norm": None, "hidden": [4]}}})
    with pytest.raises(UserError, match=r"^\[model\] args\.norm = None cannot be written"):
        to_toml(cfg)


def test_new_data_keys_read_back_from_the_resolved_toml():
    cfg = validate_config(
        {
            "data": {
                "path": "bc.csv",
                "features": ["mean radius", "worst area"],
                "normalize": [[1.0, 2.0], [3.0, 4.0]],
            }
        }
    )
    assert cfg.data.source == "csv"  # inferred from the file name, and written out
    text = to_toml(cfg)
    assert 'source = "csv"' in text
    assert tomllib.loads(text)["data"]["features"] == ["mean radius", "worst area"]
    assert validate_config(tomllib.loads(text)) == cfg
    keyed = validate_config(
        {"data": {"input_key": "image", "target_key": 2, "path": "x.csv", "drop": ["id"]}}
    )
    assert validate_config(tomllib.loads(to_toml(keyed))) == keyed
    old = validate_config({"data": {"source": "random", "features": 7}})  # the old count key
    assert old.data.n_features == 7 and "n_features = 7" in to_toml(old)
    with pytest.raises(UserError, match=r"\[data\] features = 'a': expected a list of CSV"):
        validate_config({"data": {"features": "a"}})
