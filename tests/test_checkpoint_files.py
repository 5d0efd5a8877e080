"""The on-disk format: atomic directories, manifests that catch corruption, safe reading."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from torch import nn

import gradstep as gs
from gradstep.checkpoint import files, open_checkpoint
from gradstep.checkpoint.files import CheckpointError, sha256_file, write_checkpoint_dir
from gradstep.checkpoint.writer import step_dirs

SETTINGS = dict(
    source="random",
    n=120,
    features=5,
    classes=3,
    val_split=0.25,
    epochs=4,
    batch_size=16,
    model="mlp",
    model_args={"hidden": [8], "dropout": 0.2},
    optimizer="sgd",
    momentum=0.9,
    lr=0.05,
    checkpoint_keep=10,
    progress=False,
)


def test_write_is_atomic_and_manifest_lists_every_file(tmp_path):
    final = write_checkpoint_dir(tmp_path / "step-000001", {"a.bin": b"xyz", "b.json": b"{}"}, {})
    manifest = json.loads((final / "manifest.json").read_text())
    assert set(manifest["files"]) == {"a.bin", "b.json"}
    assert manifest["files"]["a.bin"]["sha256"] == sha256_file(final / "a.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["step-000001"]  # no temporary left
    files.verify(final)


def test_a_write_that_dies_leaves_no_checkpoint(tmp_path, monkeypatch):
    def boom(path):
        raise KeyboardInterrupt  # stands for the process dying mid-write

    monkeypatch.setattr(files, "_after_file_hook", boom)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint_dir(tmp_path / "step-000002", {"a.bin": b"1", "b.bin": b"2"}, {})
    assert not (tmp_path / "step-000002").exists()
    assert step_dirs(tmp_path) == []  # only a .tmp-* directory, which nothing lists


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A 4-epoch run with a checkpoint at every epoch's end (steps 6, 12, 18, 24)."""
    runs = tmp_path_factory.mktemp("base")
    result = gs.Trainer(run_dir=str(runs), name="base", **SETTINGS).fit()
    return result


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "flip":
        if path.name == "manifest.json":  # flip a byte inside a recorded hash
            at = data.index(b'"sha256": "') + 15
        else:
            at = len(data) // 2
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(bytes(data[: len(data) // 2]))


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize(
    "name",
    ["model.safetensors", "optimizer.safetensors", "state.json", "model.json", "manifest.json"],
)
def test_a_corrupt_checkpoint_is_rejected_and_resume_uses_the_previous(
    base_run, tmp_path, name, how, capsys
):
    run = tmp_path / "base"
    shutil.copytree(base_run.run_dir, run, symlinks=True)
    newest = step_dirs(run / "checkpoints")[-1][1]
    assert newest.name == "step-000024"
    _damage(newest / name, how)
    with pytest.raises(CheckpointError):
        open_checkpoint(newest).model_tensors()
        open_checkpoint(newest).optimizer_tensors()
        open_checkpoint(newest).state()

    resumed = gs.Trainer(run_dir=str(tmp_path), **SETTINGS).fit(resume=run)
    assert "skipped checkpoint step-000024" in capsys.readouterr().err
    assert resumed.summary["resumed_from"]["step"] == 18
    want, got = base_run.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)  # the lost epoch was retrained exactly
    assert len(list((run / "checkpoints").glob("step-000024.orphaned-*"))) == 1


def _rewrite_manifest(ckpt_dir):
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        entry["bytes"] = (ckpt_dir / name).stat().st_size
        entry["sha256"] = sha256_file(ckpt_dir / name)
    (ckpt_dir / "manifest.json").write_bytes(files.manifest_bytes(manifest))


def _safetensors(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff" * 8 + b"{}", "truncated"),  # a header length far past the end of the file
        (struct.pack("<Q", 4) + b"{{{{", "malformed safetensors"),  # a header that is not JSON
        (
            _safetensors(
                {"0.weight": {"dtype": "F32", "shape": [8, 5], "data_offsets": [0, 160]}},
                b"\0" * 16,
            ),
            "malformed safetensors",  # offsets out of range
        ),
    ],
)
def test_malformed_safetensors_name_the_file(base_run, tmp_path, content, message):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_run.run_dir / "checkpoints" / "latest", ckpt)
    (ckpt / "model.safetensors").write_bytes(content)
    _rewrite_manifest(ckpt)  # the manifest agrees: the format check itself must catch it
    with pytest.raises(CheckpointError, match=message) as err:
        gs.load_model(ckpt)
    assert "model.safetensors" in str(err.value)


def test_nan_weights_are_refused_naming_the_tensor(base_run, tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_run.run_dir / "checkpoints" / "latest", ckpt)
    tensors = open_checkpoint(ckpt).model_tensors()
    name = next(iter(tensors))
    tensors[name][0] = float("nan")
    save_file(tensors, ckpt / "model.safetensors")
    _rewrite_manifest(ckpt)
    with pytest.raises(CheckpointError, match=f"tensor '{name}' holds NaN"):
        gs.load_model(ckpt)


def test_load_model_rebuilds_from_saved_args_and_paths_resolve(base_run):
    run = base_run.run_dir
    for path in (
        run,
        run / "checkpoints",
        run / "checkpoints" / "best",
        run / "checkpoints" / "latest",
    ):
        model = gs.load_model(path)
        assert isinstance(model, gs.Predictor) and not model.training
        assert isinstance(model.network, nn.Module) and not model.network.training
    latest = gs.load_model(run / "checkpoints" / "latest")
    want = base_run.model.state_dict()
    assert list(latest.state_dict()) == list(want)  # the network's own keys
    assert all(torch.equal(want[k], v) for k, v in latest.state_dict().items())
    bare = gs.load_model(run / "checkpoints" / "latest", preprocessing=False)
    assert type(bare) is type(base_run.model) and not bare.training
    assert all(torch.equal(want[k], v) for k, v in bare.state_dict().items())


def test_keep_prunes_old_checkpoints_but_never_the_best(tmp_path):
    # lr far too large: validation gets worse after the first epochs, so best is an early one
    settings = {**SETTINGS, "lr": 5.0, "epochs": 6, "checkpoint_keep": 2}
    result = gs.Trainer(run_dir=str(tmp_path), **settings).fit()
    folder = result.run_dir / "checkpoints"
    names = [p.name for _, p in step_dirs(folder)]
    best = (folder / "best").resolve().name
    assert best in names
    assert names[-2:] == ["step-000030", "step-000036"]
    assert len(names) == (2 if best in names[-2:] else 3)
    scored = {h["step"]: h["val_loss"] for h in result.history}
    assert int(best.split("-")[1]) == min(scored, key=scored.get)
    assert result.summary["best"]["checkpoint"].endswith(best)
    assert result.summary["checkpoints"] == names


def test_a_step_checkpoint_is_best_only_where_the_metric_was_measured(tmp_path):
    # checkpoints every 4 steps, validation at epoch ends (every 6 steps): only the end-of-fit
    # checkpoint and step 12 (an epoch end that is also a multiple of 4) can be best
    result = gs.Trainer(
        run_dir=str(tmp_path), checkpoint_every=4, **{**SETTINGS, "epochs": 2}
    ).fit()
    assert result.summary["best"]["step"] in (12,)
    monitor_steps = {h["step"] for h in result.history}
    assert result.summary["best"]["step"] in monitor_steps


def test_an_inf_buffer_loads_but_an_inf_weight_is_refused(tmp_path):
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))

        def forward(self, x):
            return self.lin(x) + self.mask

    from gradstep.checkpoint.files import check_finite

    model = Masked()
    check_finite(model.state_dict(), tmp_path, allow_inf={"mask"})  # the mask is fine
    with pytest.raises(CheckpointError, match="tensor 'lin.weight' holds Inf"):
        state = {**model.state_dict(), "lin.weight": torch.full((2, 3), float("inf"))}
        check_finite(state, tmp_path, allow_inf={"mask"})


@pytest.mark.parametrize(
    "manifest",
    [
        {"format": "gradstep-checkpoint", "version": "1", "files": {}},
        {"format": "gradstep-checkpoint", "version": 1, "files": {"a": 3}},
    ],
)
def test_a_malformed_manifest_is_a_clear_error(tmp_path, manifest):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="manifest.json"):
        files.verify(tmp_path)


def test_saving_the_same_step_again_replaces_it_atomically(tmp_path):
    first = write_checkpoint_dir(tmp_path / "step-000005", {"a": b"old"}, {})
    write_checkpoint_dir(tmp_path / "step-000005", {"a": b"new"}, {})
    assert (first / "a").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["step-000005"]  # the old one is gone
    files.verify(first)


@pytest.mark.parametrize("occupant", ["link to a directory", "dangling link", "file"])
def test_saving_a_step_whose_name_is_taken_by_a_link_or_file_replaces_it_and_leaves_nothing(
    tmp_path, occupant
):
    """The new checkpoint takes the name; what held it (a link into data the run does not own,
    a stray file) is removed, never followed, and no ``.tmp-*`` entry is left behind."""
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    name = ckpts / "step-000005"
    if occupant == "link to a directory":
        name.symlink_to(outside)
    elif occupant == "dangling link":
        name.symlink_to(tmp_path / "gone")
    else:
        name.write_text("stray")
    write_checkpoint_dir(name, {"a": b"new"}, {"step": 5})
    assert name.is_dir() and not name.is_symlink()
    assert (name / "a").read_bytes() == b"new"
    files.verify(name)
    assert [p.name for p in ckpts.iterdir()] == ["step-000005"]
    assert (outside / "keep.txt").read_text() == "not ours"  # the link's target is untouched


def test_a_step_directory_whose_manifest_is_another_steps_is_refused(tmp_path):
    """A checkpoint copied or renamed to another step's name (or a reused directory whose new
    manifest never reached the disk) is refused by whatever path names it, links included."""
    write_checkpoint_dir(tmp_path / "step-000002", {"a.bin": b"x"}, {"step": 2})
    shutil.copytree(tmp_path / "step-000002", tmp_path / "step-000005")
    (tmp_path / "latest").symlink_to("step-000005")
    files.verify(tmp_path / "step-000002")
    for name in ("step-000005", "latest"):
        with pytest.raises(CheckpointError, match="its manifest is step 2's"):
            files.verify(tmp_path / name)
    shutil.copytree(tmp_path / "step-000002", tmp_path / "mine")  # not a step name: fine
    files.verify(tmp_path / "mine")


def test_a_manifest_must_match_its_own_checksum_and_one_without_still_loads(tmp_path):
    """An edited manifest is refused (its last key is the SHA-256 of what precedes it); a
    manifest written before that key existed still verifies."""
    write_checkpoint_dir(tmp_path / "step-000001", {"a.bin": b"x"}, {"step": 1})
    path = tmp_path / "step-000001" / "manifest.json"
    text = path.read_text()
    manifest = json.loads(text)
    assert manifest["manifest_sha256"] and text.rstrip().endswith('"}')
    files.verify(tmp_path / "step-000001")
    path.write_text(text.replace('"step": 1', '"step": 7').replace("step-000001", "x"))
    with pytest.raises(CheckpointError, match="does not match its own SHA-256"):
        files.read_manifest(tmp_path / "step-000001")
    del manifest["manifest_sha256"]  # the earliest checkpoints' form
    path.write_text(json.dumps(manifest, indent=1))
    files.verify(tmp_path / "step-000001")


def test_a_mid_epoch_best_checkpoint_names_the_epoch_it_was_taken_in(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from gradstep.logging.console import print_summary
    from gradstep.summary import best_from_checkpointer

    history = [{"epoch": 1, "step": 6}, {"epoch": 2, "step": 12}, {"epoch": 3, "step": 18}]
    ckpt = SimpleNamespace(
        best_step=8, best_name="step-000008", best_value=0.5, monitor="val_loss",
        directory=tmp_path,
    )  # fmt: skip
    best = best_from_checkpointer(ckpt, history)
    assert best["epoch"] == 2 and best["step"] == 8  # step 8 lies in epoch 2 (steps 7-12)
    ckpt.best_step = 20  # in epoch 4, which has no record yet (a run stopped in it)
    later = best_from_checkpointer(ckpt, history)
    assert later["epoch"] is None
    out = io.StringIO()
    summary = {
        "stop_reason": "interrupted", "epochs_completed": 3, "global_step": 20, "final": {},
        "best": later, "timings": {"wall_time_s": 1.0, "samples_per_second": 10.0},
    }  # fmt: skip
    print_summary(Console(file=out, width=300), summary, "runs/x")
    assert "best val_loss 0.5000 (step 20)," in out.getvalue(), out.getvalue()
