"""The benchmark scripts run (their figures are read by people, not asserted: see bench/)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str) -> str:
    """Run ``bench/<script>`` with ``args``; its output, after checking it succeeded."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_overhead_benchmark_runs_and_prints_the_ratio():
    out = run_bench("overhead.py", "--epochs", "2")
    assert "gradstep / hand-written loop (median of paired epochs):" in out
    assert "dataloader:" in out


def test_checkpoint_benchmark_runs_and_prints_its_figures():
    out = run_bench(
        "checkpoint.py", "--rounds", "1", "--epochs", "12", "--repeats", "1", "--full-epochs", "2"
    )
    assert "mlp10m: 10,000,310 parameters: snapshot" in out
    assert "simplenet:    101,770 parameters" in out
    assert "per-epoch checkpointing of the MNIST example" in out
    assert "counted (blocking + writer CPU)" in out
    assert "the writer thread uses" in out  # its CPU time per checkpoint, measured in the run
    assert "less the control's" in out and "writes had finished by then" in out
    # the same cost against an epoch at the real training split's size (48,000 images)
    full = re.search(r"an epoch takes (\d+) ms, and the same ([\d.]+) ms per checkpoint is", out)
    assert full is not None, out
    assert int(full.group(1)) > 0 and float(full.group(2)) > 0
    # each model's synchronous save against its floor: SHA-256 + write + sync of the same bytes
    for kind in ("simplenet", "mlp10m"):
        floor = re.search(
            rf"^checkpoint {kind}: ([\d.]+) ms \(snapshot \+ write, synchronous\) vs floor "
            r"\(sha256 \+ write \+ (?:one syncfs|fsync of each file) of the same ([\d,]+) bytes "
            r"in (\d+) files\) ([\d.]+) ms: ratio ([\d.]+)x \(target <= 1.5\) (OK|over target); "
            r"the checkpoint directory's (\d+) files hold ([\d,]+) bytes \(the same\); an fsync "
            r"of each file instead: ([\d.]+) ms$",
            out,
            re.M,
        )
        assert floor is not None, out
        assert float(floor.group(1)) > 0 and float(floor.group(4)) > 0
        assert float(floor.group(5)) > 0 and float(floor.group(9)) > 0
        # the floor writes exactly the checkpoint's files: as many, and as many bytes
        assert floor.group(2) == floor.group(8) and floor.group(3) == floor.group(7)
    beside = re.search(
        r"^beside it, a checkpoint's whole cost against its floor \(sha256 \+ write \+ sync of "
        r"the same bytes\): simplenet ([\d.]+)x, mlp10m ([\d.]+)x; target <= 1.5x: "
        r"(OK|over target)$",
        out,
        re.M,
    )
    assert beside is not None, out


def test_grad_norm_benchmark_runs_and_prints_the_cost_per_workload():
    out = run_bench("grad_norm.py", "--epochs", "2")
    for workload in ("tiny", "mnist", "cnn"):
        assert f"{workload}: grad_norm " in out and "per step measured" in out
    assert out.count("counted;") == 6  # the time inside the monitor, for each figure
    assert "+ clip_norm=1" in out
    assert "target: grad_norm monitoring <= 3 % per step" in out
    # the monitor's time per step against one bare call on the same gradients, in the step
    for workload in ("tiny", "mnist", "cnn"):
        for label, bare, target in (
            ("grad_norm     ", "torch._foreach_norm", r"\(target <= 1.3\) (?:OK|OVER)"),
            (r"\+ clip_norm=1 ", r"clip_grad_norm_\(foreach=True\)", r"\(for reference\)"),
        ):
            floor = re.search(
                rf"^ *{workload}: {label} ([\d.]+) us/step inside the monitor \(median call "
                rf"([\d.]+) \+ reads ([\d.]+)\) vs ([\d.]+) us for one bare {bare} on the same "
                rf"gradients in the step \(median of (\d+)\): ([\d.]+)x {target}; from means "
                r"per epoch ([\d.]+) vs ([\d.]+) us: ([\d.]+)x; the bare call in a row "
                r"([\d.]+) us$",
                out,
                re.M,
            )
            assert floor is not None, out
            assert float(floor.group(1)) > 0 and float(floor.group(4)) > 0
            assert int(floor.group(5)) > 0 and float(floor.group(6)) > 0
    assert "target: the monitor's time per step <= 1.3x one bare torch._foreach_norm" in out


def test_ddp_benchmark_runs_and_prints_the_table():
    out = run_bench(
        "ddp.py", "--rounds", "1", "--epochs", "2", "--limit", "256", "--models", "simplenet"
    )
    assert "workload: MNIST example's training split, 256 samples" in out
    assert "timed: epoch 2 (steady state) on rank 0, every system alike" in out
    assert "samples/s median (min-max)" in out
    for system, procs in [("hand", "1x64"), ("gradstep", "1x64"), ("hand", "2x32")]:
        figures = r"([\d,]+) \(([\d,]+)-([\d,]+)\) +([\d.]+) +([\d.]+) s"
        row = re.search(rf"^simplenet +{system} +{procs} +{figures}", out, re.M)
        assert row is not None, out
        assert float(row.group(1).replace(",", "")) > 0 and float(row.group(4)) > 0
        assert float(row.group(5)) > 0  # the first epoch's seconds, shown apart
    row = re.search(
        r"^simplenet +gradstep +2x32 +([\d,]+) .* ([\d.]+)x (OK|ABOVE TARGET)$", out, re.M
    )
    assert row is not None, out
    assert float(row.group(1).replace(",", "")) > 0 and float(row.group(2)) > 0
    verdict = re.search(
        r"gradstep / hand-written DDP loop, simplenet 2x32: ([\d.]+)x step time, epoch 2 "
        r"\(rounds ([\d.]+)-([\d.]+); target <= 1.05\) (OK|ABOVE TARGET); "
        r"epoch 1 alone: ([\d.]+)x",
        out,
    )
    assert verdict is not None, out
    assert float(verdict.group(2)) <= float(verdict.group(1)) <= float(verdict.group(3))
    assert float(verdict.group(5)) > 0
    for peer in ("lightning", "accelerate"):  # a row of figures, or the line saying why not
        assert re.search(rf"^simplenet +{peer} +2x32 +[\d,]+ ", out, re.M) or (
            f"{peer}: not installed (pip install -e '.[peers]')" in out
        ), out
    assert "failed (" not in out
    # the first epoch is never timed, so a run needs a second
    one = [sys.executable, str(BENCH / "ddp.py"), "--epochs", "1"]
    proc = subprocess.run(one, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--epochs >= 2" in proc.stderr, proc.stderr
