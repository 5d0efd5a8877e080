"""report.html: one offline file, checked in a real headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

import gradstep as gs
from gradstep.cli import main

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]


@pytest.fixture
def report(runs, capsys):
    r = gs.Trainer(
        source="digits",
        epochs=3,
        log_every=10,
        run_dir=str(runs),
        progress=False,
        name="digits-report",
    ).fit()
    capsys.readouterr()
    assert main(["report", str(r.run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {r.run_dir / 'report.html'}"
    return r, r.run_dir / "report.html"


def test_the_report_is_one_self_contained_file(report):
    r, page = report
    html = page.read_text()
    assert "<title>gradstep report: digits-report</title>" in html
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing outside the file
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert "Diagnosis" in html and r.summary["diagnosis"][0]["title"] in html


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium here: `make test` installs Debian's chromium package where it can "
    "(apt-get, as root); install it to run this test",
)
def test_headless_chromium_shows_the_name_the_final_metrics_and_every_image(report, tmp_path):
    r, page = report
    proc = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = proc.stdout
    assert "<h1>digits-report</h1>" in dom, proc.stderr[-2000:]
    final = r.summary["final"]
    assert f"{final['val_acc']:.2%}" in dom and f"{final['train_loss']:.4g}" in dom
    assert 'data-images="4/4"' in dom  # the page's own check, run by the browser after load
    assert "images decoded: 4/4" in dom


def test_report_of_a_folder_that_is_no_run_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_an_unwritable_report_path_is_one_line(report, tmp_path, capsys):
    r, _ = report
    assert main(["report", str(r.run_dir), "--out", str(tmp_path / "missing" / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]
