"""bench/lab.py runs and prints the lab's time beside the hand-written loop's (read by people)."""

from __future__ import annotations

import re

from tests.test_bench import run_bench


def test_lab_benchmark_runs_and_prints_both_times_and_the_ratio():
    out = run_bench("lab.py", "--rounds", "1", "--epochs", "5")
    assert "lab batchnorm: 2 models x 5 full-batch epochs, 1 rounds" in out
    for name in ("lab", "hand"):
        row = re.search(rf"{name}: ([\d.]+) s median", out)
        assert row is not None and float(row.group(1)) > 0, out
    assert re.search(r"lab / hand-written: [\d.]+x", out), out
