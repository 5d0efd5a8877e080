"""The command line: the default example; every bad input exits 2 with one line, writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
import torch

from gradstep.cli import main


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fit_without_config_trains_the_default_example(workdir, capsys):
    assert main(["fit"]) == 0
    out = capsys.readouterr().out
    run = workdir / "runs" / "mlp-digits"
    assert "Epoch [10/10]" in out and "val_acc" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 10 and summary["stop_reason"] == "completed"
    assert summary["final"]["val_acc"] > 0.9
    for key in ("samples_per_second", "wall_time_s"):
        assert summary["timings"][key] > 0
    assert set(summary["versions"]) >= {"python", "torch", "gradstep"}
    config = tomllib.loads((run / "config.toml").read_text())
    # inferred constructor arguments are written out, so the model can be rebuilt
    assert config["model"]["args"] == {"input_size": 64, "num_classes": 10}
    kinds = {json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"epoch", "val"}  # 45 steps an epoch, log_every 50: no step lines


def test_config_file_and_set_overrides(workdir, capsys):
    (workdir / "exp.toml").write_text(
        '[data]\nsource = "circles"\nn = 300\n[model]\nname = "mlp"\n'
        "[train]\nepochs = 2\nlog_every = 2\n"
    )
    code = main(
        ["fit", "exp.toml", "--set", "train.batch_size=full", "--set", "model.args.hidden=[16,8]"]
    )
    assert code == 0
    run = workdir / "runs" / "exp"
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["train"]["batch_size"] == "full"
    assert config["model"]["args"]["hidden"] == [16, 8]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 2
    # a second run with the same name takes name-2, and says so
    assert main(["fit", "exp.toml", "--set", "train.epochs=1"]) == 0
    assert (workdir / "runs" / "exp-2" / "summary.json").is_file()
    assert "already holds a run" in capsys.readouterr().out


BAD = [
    (["--set", "train.epoch=3"], r"unknown key [train] epoch (did you mean 'epochs'?)"),
    (["--set", "train.batch_size=fll"], "[train] batch_size = 'fll': expected a positive integer"),
    (["--set", "optim.lr=-0.1"], "[optim] lr = -0.1: expected a positive number"),
    (["--set", "model.name=mlpp"], "unknown model (did you mean 'mlp'?)"),
    (
        ["--set", "data.source=csv", "--set", "data.path=missing.csv"],
        "[data] path = 'missing.csv': file not found",
    ),
    (
        ["--set", "data.source=circles", "--set", "model.args.input_size=5"],
        "[model] 'mlp' rejects input of shape (2, 2)",
    ),
    (["--set", "model.args.num_classes=5"], "label 9 is outside [0, 5)"),
    (["--set", "data.source=csv", "--set", "data.path=empty.csv"], "the dataset is empty"),
    (
        ["--set", "data.source=csv", "--set", "data.path=text.csv"],
        "text.csv:3: column 'b': 'oops' is not a number",
    ),
    (
        [
            "--set",
            "data.source=circles",
            "--set",
            "data.n=50",
            "--set",
            "train.batch_size=64",
            "--set",
            "train.drop_last=true",
        ],
        "leaves no batch: the training set has 40 samples",
    ),
    (
        ["--set", "model.args.batchnorm=true", "--set", "train.batch_size=1"],
        "the model has BatchNorm1d, which fails on a batch of 1",
    ),
    (
        [
            "--set",
            "data.source=mnist",
            "--set",
            "data.path=nowhere",
            "--set",
            "data.download=false",
        ],
        "MNIST not found in nowhere and [data] download = false",
    ),
    (["--set", "data.source=nope.py:load"], "file 'nope.py' not found"),
    (["--set", "model.args.hiden=[3]"], "takes no such argument (did you mean 'hidden'?)"),
    (
        [
            "--set",
            "train.loss=cross_entropy",
            "--set",
            "data.source=csv",
            "--set",
            "data.path=real.csv",
        ],
        "needs integer class labels, found 0.5",
    ),
    (["--set", "train"], "expected section.key=value"),
    (["missing.toml"], "missing.toml: config file not found"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_input_exits_2_with_one_line_and_leaves_no_run(workdir, capsys, args, message):
    (workdir / "empty.csv").write_text("a,b,target\n")
    (workdir / "text.csv").write_text("a,b,target\n1,2,0\n3,oops,1\n")
    (workdir / "real.csv").write_text("a,target\n1,0.5\n2,1.0\n3,0\n4,1\n5,0\n")
    args = args if args and args[0].endswith(".toml") else ["--set", "train.epochs=1", *args]
    code = main(["fit", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gradstep: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (workdir / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device_is_bad_input(workdir, capsys):
    assert main(["fit", "--set", "run.device=cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gradstep.cli", "fit", "--set", "train.epoch=3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == ("gradstep: error: unknown key [train] epoch (did you mean 'epochs'?)\n")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--bogus"])
    assert exc.value.code == 2
    assert main([]) == 2
