"""The benchmark scripts run (their figures are read by people, not asserted: see bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_overhead_benchmark_runs_and_prints_the_ratio():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "overhead.py"), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "gradstep / hand-written loop (median of paired epochs):" in proc.stdout
    assert "dataloader:" in proc.stdout


def test_checkpoint_benchmark_runs_and_prints_its_figures():
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "checkpoint.py"),
            "--rounds",
            "1",
            "--epochs",
            "12",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mlp10m: 10,000,310 parameters: snapshot" in proc.stdout
    assert "simplenet:    101,770 parameters" in proc.stdout
    assert "per-epoch checkpointing costs" in proc.stdout


def test_grad_norm_benchmark_runs_and_prints_the_cost_per_workload():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "grad_norm.py"), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for workload in ("tiny", "mnist"):
        assert f"{workload}: grad_norm " in proc.stdout and "per step" in proc.stdout
    assert "+ clip_norm=1" in proc.stdout
    assert "target: grad_norm monitoring <= 3 % per step" in proc.stdout
