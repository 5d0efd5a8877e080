"""DDP checkpoints, exact resume, elastic restarts and two "nodes" (see
gradstep.checkpoint.ranks and gradstep.elastic).

Real ``torchrun`` (``torch.distributed.run``), gloo on the CPU, one thread a process, every
launch with a timeout. The child (dist_kill_child.py) trains an MLP with Adam and
``effective_batch = 32`` on the built-in ``random`` source, with a checkpoint every 2 steps;
each test kills it somewhere and compares the finished run with an uninterrupted one: every
tensor of the last checkpoint and every line of metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradstep.checkpoint import open_checkpoint

CHILD = Path(__file__).with_name("dist_kill_child.py")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(key, None)
TIMEOUT = 240
LAUNCH = [sys.executable, "-m", "torch.distributed.run"]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=ENV, **kw
    )


def child(runs: Path, name: str, settings: str, kill: str = "none", restarts: int = 0):
    args = [*LAUNCH, "--standalone", "--nproc-per-node=2", f"--max-restarts={restarts}"]
    return run([*args, str(CHILD), str(runs), name, settings, kill])


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def final(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = open_checkpoint(run_dir / "checkpoints" / "latest")
    return {
        **ckpt.model_tensors(),
        **{f"opt/{k}": v for k, v in ckpt.optimizer_tensors().items()},
    }


def lines(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        out.append({k: v for k, v in json.loads(line).items() if k != "time_s"})
    return out


def assert_identical(a: Path, b: Path, steps: int = 18) -> None:
    ta, tb = final(a), final(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert lines(a) == lines(b)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa["global_step"] == sb["global_step"] == steps  # 3 epochs of 6 steps of 32 samples


def resumed_from(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["resumed_from"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 2-rank runs, with and without dropout."""
    runs = tmp_path_factory.mktemp("ddp-ref")
    for settings in ("dropout", "plain"):
        ok(child(runs, settings, settings))
    return runs


def test_a_checkpoint_holds_every_ranks_generators_and_running_sums(reference):
    ckpt = open_checkpoint(reference / "dropout" / "checkpoints" / "step-000008")
    state = ckpt.state()
    assert state["fingerprint"]["world_size"] == 2
    assert state["fingerprint"]["effective_batch"] == 32
    ranks = state["ranks"]
    assert len(ranks) == 2 and ranks[0]["rng"] == state["rng"]
    assert state["progress"]["in_epoch"]  # step 8: mid-epoch 2, so the sums are saved
    m0, m1, total = ranks[0]["meter"], ranks[1]["meter"], state["meter"]
    assert m0["samples"] + m1["samples"] == total["samples"] == 2 * 32
    for i in range(3):
        assert total["total"][i] == pytest.approx(m0["total"][i] + m1["total"][i], rel=1e-12)


def test_sigkill_of_one_rank_under_max_restarts_finishes_bit_identical(reference, tmp_path):
    proc = ok(child(tmp_path, "dropout", "dropout", kill="rank1-step:9", restarts=2))
    assert proc.stdout.count("elastic restart 1: resuming") == 1  # said once, by rank 0
    assert resumed_from(tmp_path / "dropout")["step"] in (6, 8)
    assert_identical(reference / "dropout", tmp_path / "dropout")


def test_sigkill_mid_checkpoint_write_under_max_restarts_finishes_bit_identical(
    reference, tmp_path
):
    ok(child(tmp_path, "dropout", "dropout", kill="rank0-write:12", restarts=2))
    # the 12th file is in the third checkpoint (step 6): a half-written one, never resumed
    assert resumed_from(tmp_path / "dropout")["step"] == 4
    assert_identical(reference / "dropout", tmp_path / "dropout")


def test_a_killed_job_resumes_with_nproc_2_bit_identical(reference, tmp_path):
    killed = child(tmp_path, "dropout", "dropout", kill="all-step:9")
    assert killed.returncode != 0
    run_dir = tmp_path / "dropout"
    ok(run([sys.executable, "-m", "gradstep", "resume", str(run_dir), "--nproc", "2"]))
    assert resumed_from(run_dir)["step"] in (6, 8)
    assert_identical(reference / "dropout", run_dir)


def test_a_killed_job_resumes_on_one_process_with_the_same_effective_batch(reference, tmp_path):
    assert child(tmp_path, "plain", "plain", kill="all-step:9").returncode != 0
    run_dir = tmp_path / "plain"
    proc = ok(run([sys.executable, "-m", "gradstep", "resume", str(run_dir), "--nproc", "1"]))
    assert "batch 8 × accumulate 4" in proc.stdout  # accumulate doubled for one process
    assert resumed_from(run_dir)["step"] in (6, 8)
    ta, tb = final(reference / "plain"), final(run_dir)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert (ta[key].double() - tb[key].double()).abs().max().item() <= 1e-5, key
    la, lb = lines(reference / "plain"), lines(run_dir)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for x, y in zip(la, lb, strict=True):
        for k, v in x.items():
            if isinstance(v, float) and k != "grad_norm_max":
                assert y[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (k, x, y)


def test_a_resume_that_changes_the_effective_batch_is_refused_naming_both(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "plain"
    shutil.copytree(reference / "plain", run_dir)
    before = (run_dir / "metrics.jsonl").read_bytes()
    args = [sys.executable, "-m", "gradstep", "resume", str(run_dir)]
    proc = run([*args, "--set", "train.epochs=4", "--set", "train.effective_batch=64"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "effective batch" in proc.stderr and "32 = 8 × 2 × 2" in proc.stderr
    assert "64 = 8 × 8 × 1" in proc.stderr
    assert (run_dir / "metrics.jsonl").read_bytes() == before  # nothing touched


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine_train_the_two_rank_model(reference, tmp_path):
    """Two launchers, one process each, --nnodes 2 and a c10d rendezvous on 127.0.0.1."""
    port = free_port()
    common = [
        *LAUNCH,
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=two-nodes",
    ]
    script = [str(CHILD), str(tmp_path), "plain", "plain", "none"]
    nodes = [
        subprocess.Popen(
            [*common, f"--node-rank={i}", *script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
        )
        for i in range(2)
    ]
    try:
        outs = [node.communicate(timeout=TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert_identical(reference / "plain", tmp_path / "plain")


def test_a_rank_killed_before_the_first_checkpoint_restarts_the_run_in_its_directory(
    reference, tmp_path
):
    proc = ok(child(tmp_path, "dropout", "dropout", kill="rank1-step:1", restarts=1))
    assert "no checkpoint that verifies" in proc.stderr  # said once, then trained from step 0
    assert resumed_from(tmp_path / "dropout") == {"checkpoint": None, "step": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".elastic", "dropout"]  # no dropout-2
    assert_identical(reference / "dropout", tmp_path / "dropout")


def test_a_failed_checkpoint_write_on_rank_0_stops_every_rank_at_the_same_step(tmp_path):
    proc = child(tmp_path, "plain", "plain", kill="rank0-full:7")  # the 2nd checkpoint, step 4
    assert proc.returncode == 1, proc.stderr[-3000:]  # rank 0's SaveError; no rank left waiting
    assert "No space left on device" in proc.stderr
    summary = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["stop_reason"] == "checkpoint save failed"
    assert summary["global_step"] < 18
    assert open_checkpoint(tmp_path / "plain" / "checkpoints" / "latest").step == 2


def test_a_generic_dataset_resumes_bit_identical_after_an_elastic_restart(tmp_path):
    """The DataLoader path (a resumable distributed sampler) from a Python-API fit."""
    ok(child(tmp_path, "ref", "dataset"))
    proc = ok(child(tmp_path, "killed", "dataset", kill="rank1-step:9", restarts=1))
    assert proc.stdout.count("elastic restart 1: resuming") == 1
    assert resumed_from(tmp_path / "killed")["step"] in (6, 8)
    assert_identical(tmp_path / "ref", tmp_path / "killed")


def test_a_resume_at_the_block_where_a_ranks_share_is_empty_takes_the_step(tmp_path):
    """129 samples: the epoch's last block holds one, rank 1 none; the checkpoint at step 4
    resumes right before it, so rank 1's resumed sampler has nothing left to give."""
    ok(child(tmp_path, "ref", "dataset-129"))
    ok(child(tmp_path, "killed", "dataset-129", kill="rank1-step:5", restarts=1))
    assert resumed_from(tmp_path / "killed")["step"] == 4
    assert_identical(tmp_path / "ref", tmp_path / "killed", steps=15)
