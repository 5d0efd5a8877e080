"""Exact resume: runs SIGKILLed at many points finish bit-identical to one never killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gradstep.checkpoint import open_checkpoint

CHILD = Path(__file__).with_name("kill_child.py")
ROOT = Path(__file__).resolve().parents[1]

# 124 training samples, batch 8 -> 16 micro-batches an epoch; accumulate 3 -> 6 steps an epoch
# (the last group has one micro-batch); 3 epochs = 18 steps; checkpoints every 2 steps and at the
# end; validation every 5 steps (4 batches of up to 8) and at the end. Checkpoints are written in
# the background, so a kill may land before the newest is durable: resume then uses an earlier one
# (or, before the first, starts again) — and must finish identical whichever it is.
KILLS = [
    "forward:14",  # epoch 1, second micro-batch of step 5's group
    "forward:16",  # epoch 1's last micro-batch: the trailing partial group
    "forward:17",  # epoch 2's first micro-batch
    "forward:26",  # epoch 2, mid-group
    "forward:40",  # epoch 3, mid-group
    "val:2",  # during the validation at step 5
    "val:7",  # during the validation at step 10
    "write:6",  # checkpoint 4 half written: its directory is never renamed into place
    "write:11",  # checkpoint 6 half written
    "step:8",  # just after checkpoint 8 was handed to the background writer
    "step:13",
    "step:18",  # the last step, before the final checkpoint
]


def run_child(
    runs: Path, name: str, kill: str, resume: bool = False
) -> subprocess.CompletedProcess:
    args = [sys.executable, str(CHILD), str(runs), name, kill] + (["resume"] if resume else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)


def metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in lines:
        r.pop("time_s", None)  # wall-clock time differs between processes
    return lines


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ref")
    proc = run_child(runs, "ref", "none")
    assert proc.returncode == 0, proc.stderr
    return runs / "ref"


def assert_identical(run: Path, ref: Path) -> None:
    a, b = (
        open_checkpoint(run / "checkpoints" / "latest"),
        open_checkpoint(ref / "checkpoints" / "latest"),
    )
    assert a.step == b.step == 18
    for kind in ("model_tensors", "optimizer_tensors"):
        ta, tb = getattr(a, kind)(), getattr(b, kind)()
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{kind} {k}"
    assert metrics(run) == metrics(ref)
    sa, sb = a.state(), b.state()
    for key in ("progress", "rng", "optimizer", "callbacks"):
        assert sa[key] == sb[key], key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 18 and summary["stop_reason"] == "completed"


def _kill_and_resume(runs: Path, kill: str) -> tuple[str, Path, str]:
    name = kill.replace(":", "-")
    killed = run_child(runs, name, kill)
    resumed = run_child(runs, name, "none", resume=True)
    return kill, runs / name, f"{killed.returncode} {resumed.returncode} {resumed.stderr[-2000:]}"


def test_killed_runs_resume_bit_identical(tmp_path, reference):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda k: _kill_and_resume(tmp_path, k), KILLS))
    from_checkpoint = 0
    for kill, run, codes in results:
        assert codes.startswith("-9 0"), (kill, codes)  # SIGKILLed, then resumed cleanly
        assert_identical(run, reference)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["resumed_from"]["step"] in range(0, 18, 2), kill
        from_checkpoint += summary["resumed_from"]["checkpoint"] is not None
    print(f"{from_checkpoint} of {len(KILLS)} resumed from a checkpoint")
    assert from_checkpoint >= len(KILLS) // 2  # the rest started again: killed before the first


def test_two_kills_in_one_run(tmp_path, reference):
    assert run_child(tmp_path, "twice", "forward:20").returncode == -9
    assert run_child(tmp_path, "twice", "forward:15", resume=True).returncode == -9
    proc = run_child(tmp_path, "twice", "none", resume=True)
    assert proc.returncode == 0, proc.stderr
    assert_identical(tmp_path / "twice", reference)


def test_resume_via_the_command_line(tmp_path, reference):
    assert run_child(tmp_path, "cli", "val:7").returncode == -9
    proc = subprocess.run(
        [sys.executable, "-m", "gradstep.cli", "resume", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "resumed from step-00000" in proc.stdout
    assert_identical(tmp_path / "cli", reference)


def _start_paused(runs: Path, name: str, step: int) -> subprocess.Popen:
    """A child training ``name`` that waits in step ``step``'s end (mid-epoch 2, writing)."""
    args = [sys.executable, str(CHILD), str(runs), name, f"pause:{step}"]
    child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    flag = runs / f"{name}.paused"
    for _ in range(6000):  # at most a minute
        if flag.exists() or child.poll() is not None:
            break
        time.sleep(0.01)
    assert flag.exists(), child.communicate(timeout=60)[1][-2000:]
    return child


def _go(runs: Path, name: str) -> None:
    (runs / f"{name}.go").write_text("")


def test_a_second_writer_is_refused_naming_the_pid_and_a_kill_9_leaves_no_lock(tmp_path, reference):
    child = _start_paused(tmp_path, "locked", 8)
    try:
        run = tmp_path / "locked"
        before = (run / "metrics.jsonl").read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "gradstep.cli", "resume", str(run)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [
            f"gradstep: error: {run} is being written by another process (pid {child.pid}, "
            "a gradstep fit or resume); wait for it to end, or stop it"
        ]
        assert (run / "metrics.jsonl").read_bytes() == before  # nothing cut back or appended
        child.kill()  # SIGKILL: the operating system drops the lock with the process
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
    proc = run_child(tmp_path, "locked", "none", resume=True)  # no stale lock to clean up
    assert proc.returncode == 0, proc.stderr
    assert_identical(run, reference)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_from_outside_stops_after_the_step_and_resume_is_bit_identical(
    tmp_path, reference, sig, code
):
    child = _start_paused(tmp_path, "signalled", 9)  # step 9: mid-epoch 2, no checkpoint due
    try:
        child.send_signal(sig)
        _go(tmp_path, "signalled")
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
    run = tmp_path / "signalled"
    assert child.returncode == code, err[-2000:]
    assert b"at step 9 " in err and f"gradstep resume {run}".encode() in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["global_step"] == 9
    assert open_checkpoint(run / "checkpoints" / "latest").step == 9
    proc = run_child(tmp_path, "signalled", "none", resume=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "summary.json").read_text())["resumed_from"]["step"] == 9
    assert_identical(run, reference)
