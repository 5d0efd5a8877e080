"""The trust rule: nothing a checkpoint or a run directory names is imported unless it is a zoo
model, a file inside the code folder the user named and outside every run, or code the user
trusts. Every refused name is refused before a line of it runs: each evil module below writes a
marker file when imported, and the marker must never appear."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import gradstep as gs
from gradstep.checkpoint.files import CheckpointError, manifest_bytes, sha256_file, verify
from gradstep.cli import main

NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, input_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_size, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def evil_source(marker: Path) -> str:
    """A module that does harm (writes ``marker``) the moment it is imported."""
    return f"open({str(marker)!r}, 'w').close()\n" + NET


def reseal(ckpt: Path, name: str, change) -> None:
    """Change one JSON file of a checkpoint and seal its manifest again, as anyone who hands
    out a checkpoint can: the manifest proves integrity, not authorship."""
    info = json.loads((ckpt / name).read_text())
    change(info)
    (ckpt / name).write_text(json.dumps(info))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"][name] = {
        "bytes": (ckpt / name).stat().st_size,
        "sha256": sha256_file(ckpt / name),
    }
    manifest.pop("manifest_sha256", None)
    (ckpt / "manifest.json").write_bytes(manifest_bytes(manifest))
    verify(ckpt)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project folder: net.py, and a run trained on it (runs/victim)."""
    root = tmp_path_factory.mktemp("project")
    (root / "net.py").write_text(NET)
    (root / "exp.toml").write_text(
        '[data]\nsource = "random"\nn = 48\nfeatures = 4\n[model]\nname = "net.py:Net"\n'
        f'[run]\nname = "victim"\ndir = "{root / "runs"}"\n[train]\nepochs = 1\n'
        "progress = false\nbatch_size = 16\n"
    )
    gs.Trainer.from_config(root / "exp.toml").fit()
    return root


@pytest.fixture
def victim(project, tmp_path, monkeypatch):
    """A fresh copy of the project (so each test may tamper with it), as the working directory."""
    root = tmp_path / "project"
    shutil.copytree(project, root, symlinks=True)
    monkeypatch.chdir(root)
    run = root / "runs" / "victim"
    # the copied config points at the original run folder: point it at the copy
    text = (root / "exp.toml").read_text().replace(str(project), str(root))
    (root / "exp.toml").write_text(text)
    return root, run, run / "checkpoints" / "latest"


def inference_commands(ckpt: Path, tmp: Path) -> list[list[str]]:
    (tmp / "x.csv").write_text("a,b,c,d\n1,2,3,4\n")
    return [
        ["eval", str(ckpt)],
        ["predict", str(ckpt), str(tmp / "x.csv"), "--out", str(tmp / "p.csv")],
        ["export", str(ckpt), "--format", "pt2", "--out", str(tmp / "m.pt2")],
    ]


def assert_refused_everywhere(ckpt: Path, tmp: Path, marker: Path, capsys) -> None:
    for args in inference_commands(ckpt, tmp):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("gradstep: error:"), err
    with pytest.raises(CheckpointError):
        gs.load_model(ckpt)
    assert not marker.exists()
    assert not (tmp / "p.csv").exists() and not (tmp / "m.pt2").exists()


def test_a_relative_path_out_of_the_code_folder_is_refused(victim, tmp_path, capsys):
    root, _, ckpt = victim
    marker = tmp_path / "PWNED"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "evil.py").write_text(evil_source(marker))
    reseal(ckpt, "model.json", lambda i: i.update(name="../elsewhere/evil.py:Net"))
    assert_refused_everywhere(ckpt, tmp_path, marker, capsys)
    # an absolute path, and a symlink in the code folder that leads out of it, likewise
    reseal(ckpt, "model.json", lambda i: i.update(name=f"{tmp_path / 'elsewhere/evil.py'}:Net"))
    assert_refused_everywhere(ckpt, tmp_path, marker, capsys)
    (root / "link.py").symlink_to(tmp_path / "elsewhere" / "evil.py")
    reseal(ckpt, "model.json", lambda i: i.update(name="link.py:Net"))
    assert_refused_everywhere(ckpt, tmp_path, marker, capsys)


@pytest.mark.parametrize("where", ["run", "sibling checkpoint", "this checkpoint"])
def test_a_file_inside_a_run_directory_is_refused(victim, tmp_path, capsys, where):
    root, run, ckpt = victim
    marker = tmp_path / "PWNED"
    folder = {
        "run": run,
        "sibling checkpoint": run / "checkpoints" / "step-000001",
        "this checkpoint": ckpt.resolve(),
    }[where]
    folder.mkdir(exist_ok=True)
    (folder / "evil.py").write_text(evil_source(marker))
    relative = (folder / "evil.py").relative_to(root)
    reseal(ckpt, "model.json", lambda i: i.update(name=f"{relative}:Net"))
    assert_refused_everywhere(ckpt, tmp_path, marker, capsys)
    # naming the run's folder as the code folder does not make its files code either
    reseal(ckpt, "model.json", lambda i: i.update(name="evil.py:Net"))
    assert main(["eval", str(ckpt), "--code-dir", str(folder)]) == 2
    assert "data, never code" in capsys.readouterr().err
    assert not marker.exists()


def test_a_dotted_name_into_the_checkpoint_is_refused(victim, tmp_path, capsys, monkeypatch):
    """A namespace package through the run's folders: ``runs.victim.checkpoints.step-N.evil``,
    importable whenever the project folder is on sys.path (a script in it, or PYTHONPATH)."""
    root, _, ckpt = victim
    marker = tmp_path / "PWNED"
    step = ckpt.resolve()
    (step / "evil.py").write_text(evil_source(marker))
    monkeypatch.syspath_prepend(str(root))
    dotted = f"runs.victim.checkpoints.{step.name}.evil:Net"
    reseal(ckpt, "model.json", lambda i: i.update(name=dotted))
    assert_refused_everywhere(ckpt, tmp_path, marker, capsys)
    assert not any(m.startswith("runs") for m in sys.modules)


def test_an_installed_module_is_not_imported_for_a_checkpoint(
    victim, tmp_path, capsys, monkeypatch
):
    """Even an importable module's import side effects never run: ``this`` would print the Zen
    of Python, ``marker_mod`` writes its marker."""
    _, _, ckpt = victim
    marker = tmp_path / "PWNED"
    site = tmp_path / "site"
    site.mkdir()
    (site / "marker_mod.py").write_text(evil_source(marker))
    monkeypatch.syspath_prepend(str(site))
    for name in ("marker_mod:Net", "this:Net"):
        reseal(ckpt, "model.json", lambda i, n=name: i.update(name=n))
        assert_refused_everywhere(ckpt, tmp_path, marker, capsys)
    assert "marker_mod" not in sys.modules and "this" not in sys.modules
    assert "Beautiful is better" not in capsys.readouterr().out
    # trusting it, as one trusts code, is the user's call: then it is imported and loads
    reseal(ckpt, "model.json", lambda i: i.update(name="marker_mod:Net"))
    model = gs.load_model(ckpt, trust_code=True)
    assert type(model.network).__name__ == "Net" and marker.exists()
    sys.modules.pop("marker_mod", None)


def test_legitimate_models_still_load(victim, tmp_path, capsys, monkeypatch):
    root, _, ckpt = victim
    x = torch.randn(3, 4)
    # file.py:Class in the working directory (the run's own model)
    reference = gs.load_model(ckpt)(x)
    # the same from another working directory with --code-dir / code_dir=
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="--code-dir"):
        gs.load_model(ckpt)
    assert torch.equal(gs.load_model(ckpt, code_dir=root)(x), reference)
    assert main(["eval", str(ckpt), "--code-dir", str(root)]) == 0
    # a package.module:Class the user's process has imported already
    site = tmp_path / "site"
    site.mkdir()
    (site / "userpkg_nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(site))
    reseal(ckpt, "model.json", lambda i: i.update(name="userpkg_nets:Net"))
    with pytest.raises(CheckpointError, match="trust"):
        gs.load_model(ckpt)
    import userpkg_nets  # noqa: F401  (the user's own import)

    assert torch.equal(gs.load_model(ckpt)(x), reference)
    sys.modules.pop("userpkg_nets", None)
    # a zoo model
    zoo = gs.Trainer(run_dir=str(tmp_path / "zr"), source="random", n=32, epochs=1)
    assert gs.load_model(zoo.fit().run_dir) is not None
    capsys.readouterr()


def test_resume_takes_base_dir_only_from_a_checkpoint_that_verifies(victim, tmp_path, capsys):
    """A step directory with no manifest, whose model.json sends base_dir to a folder holding an
    evil net.py, is not where resume looks for code; the verified checkpoint's base_dir is."""
    root, run, _ = victim
    marker = tmp_path / "PWNED"
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    (attacker / "net.py").write_text(evil_source(marker))
    fake = run / "checkpoints" / "step-999999"
    fake.mkdir()
    (fake / "model.json").write_text(json.dumps({"name": "net.py:Net", "base_dir": str(attacker)}))
    # the verified checkpoint was written from another copy of the project: point it here
    reseal(run / "checkpoints" / "latest", "model.json", lambda i: i.update(base_dir=str(root)))
    assert main(["resume", str(run), "--set", "train.epochs=2"]) == 0
    assert "skipped checkpoint step-999999" in capsys.readouterr().err
    assert not marker.exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2


def test_resume_refuses_code_a_verified_checkpoint_sends_it_to(victim, tmp_path, capsys):
    root, run, ckpt = victim
    marker = tmp_path / "PWNED"
    # base_dir into the run itself, where a net.py was dropped
    (run / "net.py").write_text(evil_source(marker))
    reseal(ckpt, "model.json", lambda i: i.update(base_dir=str(run)))
    before = (run / "config.toml").read_text()
    assert main(["resume", str(run), "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "base_dir" in err, err
    # base_dir outside the code folder (the working directory)
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    (attacker / "net.py").write_text(evil_source(marker))
    reseal(ckpt, "model.json", lambda i: i.update(base_dir=str(attacker)))
    assert main(["resume", str(run), "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the code folder" in err, err
    # the run's config.toml naming a file.py data source inside the run
    reseal(ckpt, "model.json", lambda i: i.update(base_dir=str(root)))
    (run / "data.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef load(): pass\n")
    (run / "config.toml").write_text(
        before.replace('source = "random"', 'source = "runs/victim/data.py:load"')
    )
    assert main(["resume", str(run), "--set", "train.epochs=2"]) == 2
    assert "data, never code" in capsys.readouterr().err
    assert not marker.exists()
    assert not (run / "checkpoints" / "step-000006").exists()  # nothing trained
