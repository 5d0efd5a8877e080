"""gradstep lab: the list, each experiment's plot and table, and the textbook numbers."""

from __future__ import annotations

import pytest

from gradstep.cli import main
from gradstep.lab import EXPERIMENTS, run_lab


def test_lab_alone_lists_the_experiments_one_line_each(capsys):
    assert main(["lab"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(EXPERIMENTS)
    assert list(EXPERIMENTS) == ["batchnorm", "gd-variants", "accumulation", "lr-schedules"]


def test_lab_batchnorm_gives_both_models_final_test_accuracy(tmp_path, capsys):
    assert main(["lab", "batchnorm", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "with BatchNorm" in out and "without BatchNorm" in out
    table = (tmp_path / "batchnorm.md").read_text()
    header = [c.strip() for c in table.splitlines()[2].split("|")]
    rows = [line for line in table.splitlines() if "BatchNorm |" in line]
    assert len(rows) == 2
    for row in rows:
        cells = dict(zip(header, (c.strip() for c in row.split("|")), strict=True))
        accuracy = cells["final test accuracy"]
        assert accuracy.endswith("%") and float(accuracy[:-1]) > 90  # circles are learnable
        # what its former time limit protected: all 500 full-batch epochs run, none skipped
        # (how long they take is bench/lab.py's figure, not a test's)
        assert cells["epochs"] == "500"
    assert (tmp_path / "batchnorm.png").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "with BatchNorm",
        "without BatchNorm",
    ]


def test_lab_accumulation_shows_the_two_setups_agree(tmp_path):
    rows = run_lab("accumulation", tmp_path)
    assert [r["updates made"] for r in rows] == ["880", "880"]
    assert float(rows[0]["max |weight difference|"]) <= 1e-5
    assert rows[0]["final train loss"] == rows[1]["final train loss"]


@pytest.mark.parametrize("name", ["gd-variants", "lr-schedules"])
def test_the_other_experiments_write_their_plot_and_table(name, tmp_path, monkeypatch):
    if name == "gd-variants":  # fewer epochs: batch 1 is 1,400 steps an epoch
        import gradstep.lab as lab

        real = lab._train
        monkeypatch.setattr(lab, "_train", lambda *a, **k: real(*a, **{**k, "epochs": 2}))
    rows = run_lab(name, tmp_path)
    assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.md").is_file()
    if name == "gd-variants":
        assert [r["updates made"] for r in rows] == ["2800", "88", "2"]
    else:
        assert [r["schedule"].split()[0] for r in rows] == ["constant", "step", "cosine"]


def test_an_unknown_experiment_is_a_one_line_error(capsys):
    assert main(["lab", "batchnrm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'batchnorm'" in err and len(err.splitlines()) == 1
