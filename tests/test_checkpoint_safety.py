"""Loading never executes code: pickles are refused by every command, and the marker a
malicious pickle would create never appears."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gradstep as gs
from gradstep.checkpoint.files import CheckpointError, manifest_bytes, verify
from gradstep.cli import main


class Evil:
    """Unpickling this runs ``open(marker, "w")``: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_files(tmp_path):
    marker = tmp_path / "PWNED"
    payload = {"state_dict": {"w": torch.zeros(2)}, "hook": Evil(marker)}
    out = {}
    for name in ("model.pt", "model.pth", "weights.pkl", "no_extension"):
        with (tmp_path / name).open("wb") as f:
            pickle.dump(payload, f)
        out[name] = tmp_path / name
    torch.save(payload, tmp_path / "torch_zip.ckpt")  # torch.save's zip format
    out["torch_zip.ckpt"] = tmp_path / "torch_zip.ckpt"
    # a checkpoint directory whose weights file was swapped for a pickle, manifest and all
    trainer = gs.Trainer(
        run_dir=str(tmp_path / "runs"), source="random", n=40, epochs=1, progress=False
    )
    ckpt = trainer.fit().run_dir / "checkpoints" / "latest"
    swapped = tmp_path / "swapped"
    shutil.copytree(ckpt, swapped)
    shutil.copy(out["model.pt"], swapped / "model.safetensors")
    out["swapped"] = swapped
    return out, marker


def test_every_command_refuses_pickles_and_never_runs_them(evil_files, tmp_path, capsys):
    files, marker = evil_files
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    for name, path in files.items():
        commands = [
            ["eval", str(path)],
            ["predict", str(path), str(tmp_path / "x.csv"), "--out", str(tmp_path / "p.csv")],
            ["export", str(path), "--format", "pt2", "--out", str(tmp_path / "m.pt2")],
            ["resume", str(path)],
            ["convert", str(path), "--model", "simplenet", "--out", str(tmp_path / "conv")],
        ]
        for args in commands:
            if name == "swapped" and args[0] == "convert":
                continue
            assert main(args) == 2, (name, args)
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "Traceback" not in err, err
            if args[0] != "convert" and name != "swapped":
                assert "pickle" in err and "gradstep convert" in err, err
        with pytest.raises(CheckpointError):
            gs.load_model(path)
    assert not marker.exists()
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.pt2").exists()
    assert not (tmp_path / "conv").exists()


def test_convert_reads_a_plain_state_dict_with_weights_only(tmp_path):
    from gradstep.models import SimpleNet

    torch.manual_seed(0)
    net = SimpleNet(input_size=4, hidden_size=8, num_classes=3)
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, tmp_path / "legacy.pth")
    out = tmp_path / "converted"
    code = main(
        [
            "convert",
            str(tmp_path / "legacy.pth"),
            "--model",
            "simplenet",
            "--set",
            "model.args.input_size=4",
            "--set",
            "model.args.hidden_size=8",
            "--set",
            "model.args.num_classes=3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    loaded = gs.load_model(out)
    x = torch.randn(5, 4)
    assert torch.equal(loaded(x), net.eval()(x))


def test_the_real_process_prints_one_line_for_a_pickle(evil_files, tmp_path):
    files, marker = evil_files
    proc = subprocess.run(
        [sys.executable, "-m", "gradstep.cli", "eval", str(files["model.pt"])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("gradstep: error:") and proc.stderr.count("\n") == 1
    assert "never unpickles" in proc.stderr
    assert not marker.exists()


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_a_custom_models_code_is_imported_only_from_the_folder_you_name(tmp_path, monkeypatch):
    trainer = gs.Trainer.from_config(
        EXAMPLES / "custom_model.toml", [f"run.dir={tmp_path}", "train.epochs=1"]
    )
    run = trainer.fit().run_dir
    monkeypatch.chdir(tmp_path)  # custom_model.py is not here
    with pytest.raises(CheckpointError, match="--code-dir"):
        gs.load_model(run)
    model = gs.load_model(run, code_dir=EXAMPLES)
    assert type(model.network).__name__ == "TwoLayer"  # behind the training preprocessing
    x = torch.randn(4, 2)
    assert torch.equal(model.network(x), trainer.model.eval()(x))


def test_a_checkpoint_cannot_make_gradstep_run_code_it_carries(tmp_path, monkeypatch):
    import json

    from gradstep.checkpoint.files import sha256_file

    marker = tmp_path / "PWNED"
    run = gs.Trainer(run_dir=str(tmp_path / "runs"), source="random", n=40, epochs=1).fit().run_dir
    ckpt = tmp_path / "ckpt"
    shutil.copytree(run / "checkpoints" / "latest", ckpt)
    (ckpt / "evil.py").write_text(f"open({str(marker)!r}, 'w')\nclass Net: pass\n")
    for name in ("evil.py:Net", f"{ckpt / 'evil.py'}:Net"):
        info = json.loads((ckpt / "model.json").read_text())
        info.update(name=name, base_dir=str(ckpt))
        (ckpt / "model.json").write_text(json.dumps(info))
        manifest = json.loads((ckpt / "manifest.json").read_text())
        entry = manifest["files"]["model.json"]
        entry.update(bytes=(ckpt / "model.json").stat().st_size)
        entry.update(sha256=sha256_file(ckpt / "model.json"))
        (ckpt / "manifest.json").write_bytes(manifest_bytes(manifest))
        verify(ckpt)  # a checkpoint that verifies: what refuses it must be the rule on code
        for cwd in (tmp_path, ckpt):
            monkeypatch.chdir(cwd)
            with pytest.raises(CheckpointError):
                gs.load_model(ckpt)
    assert not marker.exists()
