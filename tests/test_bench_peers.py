"""bench/peers.py runs and prints its table (its figures are read by people, not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "peers.py"
INSTALL = "not installed (pip install -e '.[peers]')"
# system, fit median (min-max), x hand, import s, set-up s, accuracy, epochs
ROW = r"^{} +([\d.]+) \(([\d.]+)-([\d.]+)\) +([\d.]+)x +([\d.]+) +([\d.]+) +([\d.]+) +(\d+)$"


def run_peers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300
    )


def rows(section: str, system: str) -> list[re.Match[str]]:
    return list(re.finditer(ROW.format(re.escape(system)), section, re.M))


def test_peers_benchmark_runs_the_systems_that_need_no_peer_and_prints_the_table():
    systems = ["hand", "dataloader", "gradstep-bare", "gradstep"]
    proc = run_peers(
        "--systems", ",".join(systems), "--rounds", "1", "--epochs", "1", "--epochs-b", "1",
        "--limit", "256",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "timed: the fit call alone; import and set-up apart" in out
    a_part, _, b_part = out.partition("workload B (seed 001)")
    assert "workload A (seed 004): 256 randn(10) samples" in a_part
    assert "MNIST SimpleNet 784-128-10, 256 train / 64 validation" in b_part
    for section in (a_part, b_part):
        header = r"^system +fit s median \(min-max\) +x hand +import s +set-up s +acc +epochs$"
        assert re.search(header, section, re.M), section
        for system in systems:
            (row,) = rows(section, system)
            low, med, high = (float(row.group(i)) for i in (2, 1, 3))
            assert 0 <= low <= med <= high  # seconds to 2 places: a tiny smoke fit shows 0.00
            assert float(row.group(4)) > 0  # the ratio to the hand loop
            assert float(row.group(5)) > 0 and float(row.group(6)) >= 0  # import, set-up
            assert 0 <= float(row.group(7)) <= 1  # the final accuracy
            assert row.group(8) == "1"  # epochs run
        (hand,) = rows(section, "hand")
        assert hand.group(4) == "1.000"
        assert re.search(r"hand loop spread on [AB]: .* of its median", section)
        assert re.search(r"gradstep fit on [AB]: [\d.]+ s before the loop, [\d.]+ s the loop", out)
    verdict = re.search(
        r"target: gradstep-bare <= 1.05x the hand-written loop on A: ([\d.]+)x: (met|not met)$",
        out,
        re.M,
    )
    assert verdict is not None, out
    assert "failed (" not in out


def test_a_peer_that_cannot_be_imported_is_reported_as_not_installed():
    # the children's `import lightning` / `import keras` raise ModuleNotFoundError, as where
    # they are not installed (the same except clause in the child takes it)
    proc = run_peers(
        "--systems", "hand,lightning,keras", "--workloads", "A", "--rounds", "2",
        "--epochs", "1", "--limit", "64", "--hide", "lightning,keras",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for peer in ("lightning", "keras"):
        assert re.search(rf"^{peer} +{re.escape(INSTALL)}$", out, re.M), out
        assert proc.stderr.count(f"A {peer}: {INSTALL}") == 1  # tried once, then skipped
    assert len(rows(out, "hand")) == 1
    assert "target: gradstep" not in out  # neither gradstep row ran: no verdict to print


def test_peers_benchmark_refuses_a_run_without_the_hand_loop():
    proc = run_peers("--systems", "gradstep")
    assert proc.returncode == 2 and "--systems: hand and any of" in proc.stderr
