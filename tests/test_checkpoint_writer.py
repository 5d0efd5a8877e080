"""The background writer: in order, bounded, and honest about failures."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from gradstep.checkpoint import files
from gradstep.checkpoint.encoding import tensors_to_bytes
from gradstep.checkpoint.writer import CheckpointWriter, Job, step_dirs


def job(step: int, best: bool = False) -> Job:
    return Job(name=f"step-{step:06d}", files={"a.bin": bytes([step % 256]) * 10}, best=best)


def test_writes_in_order_keeps_the_newest_and_the_best(tmp_path):
    writer = CheckpointWriter(tmp_path, keep=2)
    outcomes = []
    for step in range(1, 6):
        outcomes += writer.submit(job(step, best=step == 2))
    outcomes += writer.close()
    assert [o.job.name for o in outcomes] == [f"step-{s:06d}" for s in range(1, 6)]
    assert all(o.error is None for o in outcomes)
    assert [p.name for _, p in step_dirs(tmp_path)] == ["step-000002", "step-000004", "step-000005"]
    assert os.readlink(tmp_path / "latest") == "step-000005"
    assert os.readlink(tmp_path / "best") == "step-000002"
    files.verify(tmp_path / "latest")


def test_submit_blocks_beyond_max_pending(tmp_path, monkeypatch):
    gate = threading.Event()
    real = CheckpointWriter._write

    def slow(self, j):
        gate.wait(5)
        return real(self, j)

    monkeypatch.setattr(CheckpointWriter, "_write", slow)
    writer = CheckpointWriter(tmp_path, keep=5, max_pending=2)
    writer.submit(job(1))
    writer.submit(job(2))
    assert len(writer._pending) == 2 and writer.poll() == []  # nothing finished, nothing lost
    blocked = threading.Thread(target=writer.submit, args=(job(3),))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # a third snapshot waits for the writer
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive()
    writer.close()
    assert len(step_dirs(tmp_path)) == 3


def test_a_failed_write_is_reported_and_never_linked(tmp_path, monkeypatch):
    def fail(final, data, meta, *reuse):
        raise files.SaveError(f"cannot save checkpoint {final}: No space left on device")

    writer = CheckpointWriter(tmp_path, keep=3)
    writer.submit(job(1))
    writer.wait()
    monkeypatch.setattr("gradstep.checkpoint.writer.write_checkpoint_dir", fail)
    writer.submit(job(2, best=True))
    outcomes = writer.close()
    assert outcomes[0].error is not None and "step-000002" in str(outcomes[0].error)
    assert os.readlink(tmp_path / "latest") == "step-000001"
    assert not (tmp_path / "best").exists()


def test_a_pruned_checkpoint_is_written_into_again_and_holds_only_the_new_files(tmp_path):
    """Pruning keeps one directory aside and the next checkpoint overwrites its files in place
    (same inodes): each checkpoint must still hold exactly its own bytes — no tail of a longer
    old file, no file it did not write — and nothing hidden is left after close."""
    writer = CheckpointWriter(tmp_path, keep=2, background=False)
    sizes = [4000, 4000, 1000, 9000, 10, 4000, 3000]
    opened = {}  # step -> its w.bin, held open: a deleted file's inode is never reused meanwhile
    for step, size in enumerate(sizes, 1):
        data = {"w.bin": bytes([step]) * size, "state.json": b"{}" * step}
        if step % 3 == 0:
            data["extra.bin"] = b"x" * step  # only in some checkpoints
        assert all(o.error is None for o in writer.submit(Job(f"step-{step:06d}", data)))
        latest = tmp_path / "latest"
        files.verify(latest)
        assert sorted(p.name for p in latest.iterdir()) == sorted([*data, files.MANIFEST])
        for name, content in data.items():
            assert (latest / name).read_bytes() == content
        opened[step] = (latest / "w.bin").open("rb")
        if step >= 4:  # written into the checkpoint pruned before it: 1 -> 4 -> 7, 2 -> 5, ...
            # the file opened three checkpoints ago holds these bytes (a deleted one would not)
            before = opened[step - 3]
            assert os.fstat(before.fileno()).st_ino == os.fstat(opened[step].fileno()).st_ino
            before.seek(0)
            assert before.read() == data["w.bin"]
        hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(files.TMP_PREFIX)]
        assert len(hidden) <= 1 and all(h.startswith(".tmp-spare-") for h in hidden)
    for f in opened.values():
        f.close()
    writer.close()
    assert [p.name for _, p in step_dirs(tmp_path)] == ["step-000006", "step-000007"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(files.TMP_PREFIX)]


def valid_state(step: int) -> dict:
    """The smallest ``state.json`` the schema accepts: a finished epoch of ``step`` steps."""
    from gradstep.checkpoint.content import rng_state

    progress = dict(
        epoch=1,
        batch=step,
        step_in_epoch=step,
        global_step=step,
        samples_seen=step,
        epochs_completed=0,
        in_epoch=False,
        should_stop=False,
        stop_reason=None,
    )
    group = dict(lr=0.1, momentum=0, dampening=0, weight_decay=0, nesterov=False, params=[])
    return {
        "step": step,
        "epoch": 1,
        "progress": progress,
        "meter": None,
        "train_metrics": {},
        "val_metrics": {},
        "metrics_bytes": None,
        "rng": rng_state(),
        "callbacks": {},
        "history": [],
        "fingerprint": {"accumulate": 1},
        "config": {},
        "optimizer": {"class": "SGD", "param_groups": [group], "scalars": {}},
    }


def ckpt_job(step: int) -> Job:
    """A checkpoint that resume would accept: real safetensors, JSON, a step in its manifest."""
    weights = tensors_to_bytes({"w": torch.full((16,), float(step))})
    data = {
        "model.safetensors": weights,
        "optimizer.safetensors": tensors_to_bytes({}),
        "model.json": b"{}",
        "state.json": json.dumps(valid_state(step)).encode(),
    }
    return Job(name=f"step-{step:06d}", files=data, meta={"step": step})


@pytest.mark.parametrize("lost", ["data", "everything", "half the manifest"])
def test_a_crash_that_loses_the_overwrites_of_a_reused_directory_is_never_taken(
    tmp_path, monkeypatch, lost
):
    """Power lost after the reused directory got its final name but before what was written
    in place reached the disk. The files hold the pruned checkpoint's bytes again: the new
    manifest rejects them. If the manifest was lost too, the old one verifies the old files
    but names step 1 in step-000004: refused. If the manifest was torn (its first sector new,
    from state.json's line on, as state.json itself, still old; same length, so it parses and
    every file matches it), it does not match its own checksum. Resume falls back to the
    previous checkpoint each time."""
    from gradstep.checkpoint.load import newest_good

    writer = CheckpointWriter(tmp_path, keep=2, background=False)
    for step in (1, 2, 3):
        writer.submit(ckpt_job(step))  # after 3, step-000001 becomes the spare
    real = files.write_checkpoint_dir

    def power_loss(final, data, meta, reuse=None):
        assert reuse is not None
        old = {p.name: (p.read_bytes(), p.stat().st_ino) for p in reuse.iterdir()}
        out = real(final, data, meta, reuse)
        for name, (content, inode) in old.items():
            path = final / name
            if not path.exists() or path.stat().st_ino != inode:
                continue  # a new file: not overwritten in place
            if lost == "half the manifest":
                if name == "state.json":
                    path.write_bytes(content)
                elif name == files.MANIFEST:
                    new = path.read_bytes()
                    assert len(new) == len(content)  # steps 1 and 4: one digit each
                    cut = new.index(b'"state.json"')
                    path.write_bytes(new[:cut] + content[cut:])
            elif name != files.MANIFEST or lost == "everything":
                path.write_bytes(content)
        return out

    monkeypatch.setattr("gradstep.checkpoint.writer.write_checkpoint_dir", power_loss)
    writer.submit(ckpt_job(4))
    found, skipped = newest_good(tmp_path)
    assert found is not None and found.path.name == "step-000003"
    reason = {
        "data": "does not match the manifest",
        "everything": "its manifest is step 1's",
        "half the manifest": "does not match its own SHA-256",
    }[lost]
    assert len(skipped) == 1 and "step-000004" in skipped[0] and reason in skipped[0]
    if lost == "half the manifest":
        with pytest.raises(files.CheckpointError, match="own SHA-256"):
            files.verify(tmp_path / "step-000004")


def test_a_reused_directory_never_writes_through_a_link(tmp_path):
    """A hard-linked backup (cp -al) of a checkpoint, a file replaced by a symlink, a read-only
    file, must not be overwritten when that checkpoint's directory is reused (a directory or a
    FIFO where a file was is removed)."""
    writer = CheckpointWriter(tmp_path / "ck", keep=1, background=False)
    writer.submit(ckpt_job(1))
    backup = tmp_path / "backup"
    backup.mkdir()
    for p in (tmp_path / "ck" / "step-000001").iterdir():
        os.link(p, backup / p.name)
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"keep me")
    writer.submit(ckpt_job(2))
    state = tmp_path / "ck" / "step-000002" / "state.json"
    state.unlink()
    state.symlink_to(outside)
    read_only = tmp_path / "ck" / "step-000002" / "model.json"
    read_only.write_bytes(b"mine, read-only")
    read_only.chmod(0o444)
    held = read_only.open("rb")  # the read-only file's inode, to see it is not written into
    (spare,) = (tmp_path / "ck").glob(".tmp-spare-*")  # step-000001, pruned: written next
    opt = spare / "optimizer.safetensors"
    opt.unlink()
    (opt / "sub").mkdir(parents=True)
    os.unlink(spare / "state.json")
    os.mkfifo(spare / "state.json")  # opened for writing with no reader: must not hang
    for step in (3, 4):  # step-000001, then step-000002 are written into again
        assert all(o.error is None for o in writer.submit(ckpt_job(step)))
        files.verify(tmp_path / "ck" / f"step-{step:06d}")
    writer.close()
    files.verify(backup)  # the backup still holds step 1, intact
    assert (backup / "model.safetensors").read_bytes() == ckpt_job(1).files["model.safetensors"]
    assert outside.read_bytes() == b"keep me"
    assert held.read() == b"mine, read-only"
    assert (
        os.fstat(held.fileno()).st_ino
        != (tmp_path / "ck" / "step-000004" / "model.json").stat().st_ino
    )
    held.close()


def test_a_killed_runs_spare_is_removed_by_the_next_writer(tmp_path):
    writer = CheckpointWriter(tmp_path, keep=1, background=False)
    for step in (1, 2):
        writer.submit(ckpt_job(step))
    spares = list(tmp_path.glob(".tmp-spare-*"))
    assert len(spares) == 1  # a SIGKILL now would leave it behind
    again = CheckpointWriter(tmp_path, keep=1, background=False)  # the resumed run's writer
    again.submit(ckpt_job(3))
    assert spares[0] not in list(tmp_path.glob(".tmp-spare-*"))
    again.close()
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_checkpoint_under_another_steps_name_is_skipped(tmp_path):
    import shutil

    from gradstep.checkpoint.load import newest_good

    writer = CheckpointWriter(tmp_path, keep=3, background=False)
    for step in (1, 2):
        writer.submit(ckpt_job(step))
    shutil.copytree(tmp_path / "step-000002", tmp_path / "step-000005")  # verifies, but is 2
    found, skipped = newest_good(tmp_path)
    assert found is not None and found.path.name == "step-000002"
    assert skipped == [
        f"skipped checkpoint step-000005: {tmp_path}/step-000005: its manifest is step 2's"
    ]


def test_a_checkpoint_whose_state_is_another_steps_is_skipped(tmp_path):
    """A manifest that verifies files of two checkpoints mixed (state.json of another step)."""
    from gradstep.checkpoint.load import newest_good

    writer = CheckpointWriter(tmp_path, keep=3, background=False)
    writer.submit(ckpt_job(1))
    mixed = ckpt_job(2)
    mixed.name, mixed.meta = "step-000005", {"step": 5}
    writer.submit(mixed)
    found, skipped = newest_good(tmp_path)
    assert found is not None and found.path.name == "step-000001"
    assert skipped == [
        f"skipped checkpoint step-000005: {tmp_path}/step-000005: state.json is step 2's, "
        "the manifest 5's"
    ]


def test_pruning_orders_by_step_number_across_a_million_steps(tmp_path):
    """``step-1000000`` sorts before ``step-999999`` as a string: pruning by name would delete
    the newest checkpoints and leave ``latest`` dangling."""
    writer = CheckpointWriter(tmp_path, keep=2)
    for step in (999_998, 999_999, 1_000_000, 1_000_001):
        writer.submit(job(step))
    assert all(o.error is None for o in writer.close())
    assert [s for s, _ in step_dirs(tmp_path)] == [1_000_000, 1_000_001]
    assert os.readlink(tmp_path / "latest") == "step-1000001"
    files.verify(tmp_path / "latest")


def test_an_unreadable_old_checkpoint_is_left_alone_not_recycled(tmp_path, monkeypatch):
    """Pruning would write the next checkpoint into the oldest one's directory; one it cannot
    read (permissions, I/O errors) is neither recycled nor removed, and the write goes into a
    fresh directory."""
    writer = CheckpointWriter(tmp_path, keep=1, background=False)
    writer.submit(job(1))
    real_listdir = os.listdir
    locked = str(tmp_path / "step-000001")

    def listdir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    writer.submit(job(2))
    writer.submit(job(3))
    assert all(o.error is None for o in writer.close())
    assert (tmp_path / "step-000001" / "a.bin").read_bytes() == bytes([1]) * 10  # untouched
    files.verify(tmp_path / "step-000003")
    assert os.readlink(tmp_path / "latest") == "step-000003"
