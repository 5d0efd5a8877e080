"""Loading stays inside its run and never crashes on a bad checkpoint: links out of the run are
not followed, every file read is the checkpoint's own and listed in its manifest, weights of
another dtype are refused, and a checkpoint that fails in any way is skipped (a run directory)
or refused in one line (one named checkpoint)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import gradstep as gs
from gradstep.checkpoint.encoding import tensors_to_bytes
from gradstep.checkpoint.files import CheckpointError, manifest_bytes, sha256_file, verify
from gradstep.checkpoint.load import load_state
from gradstep.cli import main

SETTINGS = dict(source="random", n=48, features=4, epochs=2, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs, a and b, side by side (3 checkpoints each: steps 3 and 6)."""
    parent = tmp_path_factory.mktemp("runs")
    a = gs.Trainer(run_dir=str(parent), name="a", **SETTINGS).fit().run_dir
    b = gs.Trainer(run_dir=str(parent), name="b", seed=1, **SETTINGS).fit().run_dir
    return a, b


@pytest.fixture
def runs(two_runs, tmp_path):
    parent = tmp_path / "runs"
    shutil.copytree(two_runs[0].parent, parent, symlinks=True)
    return parent / "a", parent / "b"


def reseal(ckpt: Path, change=None, drop: str | None = None) -> None:
    """Seal ``ckpt``'s manifest again after its files changed (``change(manifest)`` edits it;
    ``drop`` removes a file from its list), as anyone who hands out a checkpoint can."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest.pop("manifest_sha256", None)
    for name in list(manifest["files"]):
        if name == drop:
            del manifest["files"][name]
        elif (ckpt / name).is_file():
            data = (ckpt / name).read_bytes()
            manifest["files"][name] = {"bytes": len(data), "sha256": sha256_file(ckpt / name)}
    if change is not None:
        change(manifest)
    (ckpt / "manifest.json").write_bytes(manifest_bytes(manifest))


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file under ``run`` (links as their targets' names)."""
    out = {}
    for p in sorted(run.rglob("*")):
        if p.is_symlink():
            out[str(p)] = os.readlink(p).encode()
        elif p.is_file():
            out[str(p)] = p.read_bytes()
    return out


def test_best_and_latest_are_honoured_only_inside_their_run(runs, capsys):
    a, b = runs
    other = b / "checkpoints" / "step-000006"
    for link in ("best", "latest"):
        (a / "checkpoints" / link).unlink()
        (a / "checkpoints" / link).symlink_to(other)
    # eval of the run: the links are ignored (said so), its own newest checkpoint is used
    assert main(["eval", str(a)]) == 0
    err = capsys.readouterr().err
    assert "does not point at a checkpoint of this run" in err
    x = torch.randn(5, 4)
    loaded = gs.load_model(a / "checkpoints" / "step-000006")
    with pytest.warns(UserWarning, match="does not point at a checkpoint of this run"):
        assert torch.equal(gs.load_model(a)(x), loaded(x))
    # named directly, a link out of the run is refused
    with pytest.raises(CheckpointError, match="of its own run"):
        gs.load_model(a / "checkpoints" / "best")
    assert main(["eval", str(a / "checkpoints" / "latest")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_resume_through_a_link_out_of_the_run_writes_nothing_anywhere(runs, capsys):
    a, b = runs
    (a / "checkpoints" / "latest").unlink()
    (a / "checkpoints" / "latest").symlink_to(b / "checkpoints" / "step-000006")
    before_a, before_b = snapshot(a), snapshot(b)
    trainer = gs.Trainer(run_dir=str(a.parent), name="a", **{**SETTINGS, "epochs": 3})
    with pytest.raises(CheckpointError, match="of its own run"):
        trainer.fit(resume=a / "checkpoints" / "latest")
    # a `checkpoints` folder that is a link to another run's
    shutil.rmtree(a / "checkpoints")
    (a / "checkpoints").symlink_to(b / "checkpoints")
    assert main(["resume", str(a), "--set", "train.epochs=3"]) == 2
    assert "its own" in capsys.readouterr().err
    assert snapshot(b) == before_b
    assert {k: v for k, v in snapshot(a).items() if "/checkpoints" not in k} == {
        k: v for k, v in before_a.items() if "/checkpoints" not in k
    }


def test_a_checkpoint_outside_a_run_is_not_resumed_into_its_parent(runs, tmp_path):
    a, _ = runs
    loose = tmp_path / "loose" / "step-000006"
    shutil.copytree(a / "checkpoints" / "step-000006", loose)
    with pytest.raises(CheckpointError, match="inside a run directory"):
        gs.Trainer(**SETTINGS).fit(resume=loose)
    assert sorted(p.name for p in (tmp_path / "loose").iterdir()) == ["step-000006"]


def test_a_listed_file_that_is_a_symlink_is_never_opened(runs, tmp_path):
    """``state.json`` -> a file outside the run, whose bytes even match the manifest."""
    a, _ = runs
    ckpt = a / "checkpoints" / "step-000006"
    outside = tmp_path / "outside.json"
    shutil.move(ckpt / "state.json", outside)
    (ckpt / "state.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symlink"):
        verify(ckpt)
    with pytest.raises(CheckpointError, match="symlink"):
        gs.load_model(ckpt)
    assert main(["resume", str(ckpt), "--set", "train.epochs=3"]) == 2
    (ckpt / "state.json").unlink()
    os.mkfifo(ckpt / "state.json")  # a FIFO would block a reader: refused, never opened
    with pytest.raises(CheckpointError, match="not a plain file"):
        verify(ckpt)


def test_files_the_manifest_does_not_list_are_never_read(runs):
    a, _ = runs
    ckpt = a / "checkpoints" / "step-000006"
    torch.manual_seed(5)
    changed = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in gs.load_model(ckpt).state_dict().items()
    }
    (ckpt / "model.safetensors").write_bytes(tensors_to_bytes(changed))
    reseal(ckpt, drop="model.safetensors")
    verify(ckpt)  # every listed file matches...
    with pytest.raises(CheckpointError, match="model.safetensors is not listed"):
        gs.load_model(ckpt)  # ...but the altered, unlisted weights are not loaded


def test_weights_of_another_dtype_are_refused_not_cast(runs):
    a, _ = runs
    ckpt = a / "checkpoints" / "step-000006"
    model = gs.load_model(ckpt)
    doubled = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="float64 there, torch.float32 here"):
        load_state(model, doubled, ckpt)
    (ckpt / "model.safetensors").write_bytes(tensors_to_bytes(doubled))
    reseal(ckpt)
    with pytest.raises(CheckpointError, match="float64"):
        gs.load_model(ckpt)


def deep_manifest(ckpt: Path) -> None:
    (ckpt / "manifest.json").write_text("[" * 1000)


def unreadable(ckpt: Path, monkeypatch) -> None:
    """The newest checkpoint cannot be read: chmod 000, or (as root, whom permissions do not
    stop) every open of a path inside it failing with EACCES."""
    if os.geteuid() != 0:
        ckpt.chmod(0)
        return
    real_open = os.open
    inside = str(ckpt.resolve())

    def denied(path, *args, **kwargs):
        if str(os.path.realpath(path)).startswith(inside):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)


@pytest.mark.parametrize("damage", ["deep manifest", "unreadable"])
def test_a_bad_newest_checkpoint_is_skipped_by_eval_and_resume(runs, capsys, monkeypatch, damage):
    a, _ = runs
    newest = a / "checkpoints" / "step-000006"
    (a / "checkpoints" / "best").unlink()
    (a / "checkpoints" / "best").symlink_to("step-000006")  # eval's first choice, too
    try:
        if damage == "deep manifest":
            deep_manifest(newest)
        else:
            unreadable(newest, monkeypatch)
        assert main(["eval", str(a)]) == 0
        err = capsys.readouterr().err
        assert "skipped checkpoint" in err and "Traceback" not in err, err
        assert main(["eval", str(newest)]) == 2  # named: refused in one line
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert main(["resume", str(a), "--set", "train.epochs=3"]) == 0
        err = capsys.readouterr().err
        assert "skipped checkpoint step-000006" in err and "Traceback" not in err, err
    finally:
        monkeypatch.undo()
        if newest.exists():
            newest.chmod(0o755)
    summary = json.loads((a / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["resumed_from"]["step"] == 3


def test_eval_says_which_file_the_checkpoint_makes_it_read_and_quotes_none(tmp_path, capsys):
    data = tmp_path / "train.csv"
    rows = ["a,b,target"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40)]
    data.write_text("\n".join(rows) + "\n")
    run = (
        gs.Trainer(
            run_dir=str(tmp_path / "runs"),
            source="csv",
            data_path=str(data),
            epochs=1,
            progress=False,
        )
        .fit()
        .run_dir
    )
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("evaluating on the run's validation data:") and str(data) in first
    # a crafted config pointing at a file the user never named: read, announced, never quoted
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b,target\nTOPSECRET,hunter2,1\n")
    ckpt = run / "checkpoints" / "latest"
    state = json.loads((ckpt / "state.json").read_text())
    state["config"]["data"]["path"] = str(secret)
    (ckpt / "state.json").write_text(json.dumps(state))
    reseal(ckpt)
    assert main(["eval", str(run)]) == 2
    out, err = capsys.readouterr()
    assert str(secret) in out.splitlines()[0]
    assert err.count("\n") == 1 and str(secret) in err
    assert "TOPSECRET" not in err + out and "hunter2" not in err + out


def renumber(src: Path, step: int) -> Path:
    """A copy of checkpoint ``src`` as if written at global step ``step``, sealed again."""
    dest = src.parent / f"step-{step:06d}"
    shutil.copytree(src, dest)
    state = json.loads((dest / "state.json").read_text())
    state["step"] = state["progress"]["global_step"] = step
    (dest / "state.json").write_text(json.dumps(state))
    reseal(dest, lambda m: m.update(step=step))
    return dest


def test_resume_and_pruning_across_a_million_steps(runs, capsys):
    """step-1000000 sorts before step-999999 as a string: by name, resume would take 999,999
    and pruning would delete the newest checkpoints."""
    from gradstep.checkpoint.resume import find_resume_checkpoint

    a, _ = runs
    folder = a / "checkpoints"
    for step in (999_999, 1_000_000):
        renumber(folder / "step-000006", step)
    found, _ = find_resume_checkpoint(a, print)
    assert found is not None and found.step == 1_000_000
    assert main(["resume", str(a), "--set", "train.epochs=3"]) == 0
    assert "resumed from step-1000000" in capsys.readouterr().out
    steps = sorted(int(p.name[5:]) for p in folder.glob("step-*"))
    assert steps[-3:] == [999_999, 1_000_000, 1_000_003]
    assert os.readlink(folder / "latest") == "step-1000003"
    assert json.loads((a / "summary.json").read_text())["global_step"] == 1_000_003


def test_early_stoppings_best_weights_that_do_not_fit_are_refused_before_resume_writes(tmp_path):
    run = gs.Trainer(run_dir=str(tmp_path), patience=5, **{**SETTINGS, "epochs": 2}).fit().run_dir
    ckpt = run / "checkpoints" / "latest"
    from gradstep.checkpoint.files import read_tensors

    kept = read_tensors(ckpt / "callbacks.safetensors")
    key = next(k for k in kept if k.startswith("EarlyStopping/"))
    kept[key] = torch.zeros(1)
    (ckpt / "callbacks.safetensors").write_bytes(tensors_to_bytes(kept))
    reseal(ckpt)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="EarlyStopping's best weights"):
        gs.Trainer(run_dir=str(tmp_path), patience=5, **{**SETTINGS, "epochs": 3}).fit(resume=run)
    assert snapshot(run) == before
