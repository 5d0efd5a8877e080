"""The background writer: in order, bounded, and honest about failures."""

from __future__ import annotations

import os
import threading

from gradstep.checkpoint import files
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
    def fail(final, data, meta, reuse=None):
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
