"""Bad input a fuzz trial found: each case exits 2 with one line naming the key or the file, and
fails before a run directory exists (nothing is written), never with a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gradstep.cli import main
from gradstep.config import DataSection
from gradstep.data import check_class_ids
from gradstep.data.sources import load_source
from gradstep.errors import UserError
from gradstep.rundir import create_run_dir

ESCAPED = "gradstep-escaped-run"  # where run.name = "../../NAME" would land: outside [run] dir
DEEP = "[" * 500 + "]" * 500


def _set(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


# (id, fit arguments after the base ones, what the one line must contain)
CASES: list[tuple[str, list[str], str]] = [
    ("betas-nan", _set("optim.betas=[nan, nan]"), "[optim] betas = [nan, nan]: expected two"),
    ("betas-big", _set("optim.betas=[2.0, 3.0]"), "[optim] betas = [2.0, 3.0]: expected two"),
    ("seed-2**64", _set(f"run.seed={2**64}"), f"[run] seed = {2**64}: expected an integer"),
    ("seed-negative", _set("run.seed=-1"), "[run] seed = -1: expected an integer in [0, 2**63)"),
    ("name-slash", _set("run.name=a/b"), "[run] name = 'a/b': expected one directory name"),
    ("name-backslash", _set("run.name=a\\b"), "[run] name = 'a\\\\b': expected one directory"),
    ("name-nul", _set('run.name="a\\u0000b"'), "[run] name = 'a\\x00b': expected a directory"),
    ("name-300", _set("run.name=" + "x" * 300), "(300 characters): expected a directory name"),
    ("name-empty", _set('run.name=""'), "[run] name = '': expected a non-empty directory name"),
    ("name-dot", _set("run.name=."), "[run] name = '.': expected a directory name, not"),
    ("name-dotdot", _set("run.name=.."), "[run] name = '..': expected a directory name, not"),
    ("name-escape", _set(f"run.name=../../{ESCAPED}"), f"[run] name = '../../{ESCAPED}'"),
    ("dir-file", _set("run.dir=afile"), "[run] dir = 'afile': cannot create a run directory"),
    ("dir-under-file", _set("run.dir=afile/runs"), "[run] dir = 'afile/runs': cannot create"),
    ("dir-proc", _set("run.dir=/proc/gradstep-runs"), "[run] dir = '/proc/gradstep-runs': cannot"),
    ("dir-nul", _set('run.dir="ru\\u0000ns"'), "[run] dir = 'ru\\x00ns': expected a path"),
    (
        "source-os-system",
        _set("data.source=os:system"),
        "[data] source = 'os:system' cannot be called without arguments",
    ),
    (
        "source-not-data",
        _set("data.source=os:getcwd"),
        "[data] source = 'os:getcwd' did not return training data: it returned str",
    ),
    ("n-random", _set("data.n=1000000000000"), "[data] n = 1000000000000: expected a number"),
    (
        "n-circles",
        _set("data.source=circles", "data.n=1000000000000"),
        "[data] n = 1000000000000: expected a number",
    ),
    (
        "n-times-features",
        _set("data.n=100000", "data.features=1000000"),
        "[data]: n = 100000 × features = 1000000 is",
    ),
    (
        "hidden-huge",
        _set("model.args.hidden=[1000000000000]"),
        "[model.args] hidden = [1000000000000]: 'mlp' would have",
    ),
    (
        "labels-csv",
        _set("data.source=csv", "data.path=labels.csv"),
        "[data] path = 'labels.csv': the largest label is 5000000000",
    ),
    (
        "labels-npz",
        _set("data.source=npz", "data.path=labels.npz"),
        "[data] path = 'labels.npz': the largest label is 5000000000",
    ),
    ("hidden-negative", _set("model.args.hidden=[-1]"), "[model.args] hidden = [-1]: expected"),
    ("hidden-zero", _set("model.args.hidden=[0]"), "[model.args] hidden = [0]: expected"),
    (
        "hidden-size-zero",
        _set("model.name=simplenet", "model.args.hidden_size=0"),
        "[model.args] hidden_size = 0: expected a positive integer",
    ),
    (
        "channels-negative",
        _set("data.source=digits", "model.name=cnn", "model.args.channels=[-3]"),
        "[model.args] channels = [-3]: expected",
    ),
    ("dropout-nan", _set("model.args.dropout=nan"), "[model.args] dropout = nan: expected"),
    ("dropout-one", _set("model.args.dropout=1.0"), "[model.args] dropout = 1.0: expected"),
    ("deep-set", _set("model.args.hidden=" + DEEP), "[model.args] hidden = '[[[["),
    ("toml-not-utf8", ["nonutf8.toml"], "nonutf8.toml: not valid TOML: not UTF-8"),
    ("toml-deep", ["deep.toml"], "deep.toml: "),
    (
        "npz-empty",
        _set("data.source=npz", "data.path=empty.npz"),
        "empty.npz: cannot read as .npz",
    ),
    ("csv-empty", _set("data.source=csv", "data.path=empty.csv"), "empty.csv: empty CSV file"),
    ("momentum-inf", _set("optim.momentum=inf"), "[optim] momentum = inf: expected a finite"),
    ("decay-inf", _set("optim.weight_decay=inf"), "[optim] weight_decay = inf: expected a fin"),
    ("max-lr-inf", _set("schedule.max_lr=inf"), "[schedule] max_lr = inf: expected a finite"),
    ("milestones", _set("schedule.milestones=[-5]"), "[schedule] milestones = [-5]: expected"),
    ("noise-inf", _set("data.noise=inf"), "[data] noise = inf: expected a finite number"),
    ("clip-inf", _set("train.clip_norm=inf"), "[train] clip_norm = inf: expected a finite"),
    ("min-delta-inf", _set("early_stop.min_delta=inf"), "[early_stop] min_delta = inf: expec"),
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the bad files the cases name."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "afile").write_text("a file, not a folder\n")
    (work / "empty.npz").write_bytes(b"")
    (work / "empty.csv").write_bytes(b"")
    labels = [i * 1_000_000_000 for i in range(6)]  # class "ids" in the billions
    (work / "labels.csv").write_text(
        "a,b,target\n" + "".join(f"{i},{i % 2},{y}\n" for i, y in enumerate(labels))
    )
    np.savez(work / "labels.npz", X=np.ones((6, 3), np.float32), y=np.array(labels))
    (work / "nonutf8.toml").write_bytes(b"\xff\xfe[train]\nepochs = 1\n")
    (work / "deep.toml").write_text(f"a = {DEEP}\n")
    return work


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_before_any_run_directory(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = _tree(workdir)
    base = _set("run.dir=runs", "train.epochs=1", "data.source=random", "data.n=40")
    argv = ["fit", *args] if args[0].endswith(".toml") else ["fit", *base, *args]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("gradstep: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err
    assert "Epoch [" not in out  # refused before training, not during it
    assert not (workdir / "runs").exists()
    assert _tree(workdir) == before  # nothing written anywhere under the working directory
    assert not (workdir.parent / ESCAPED).exists()
    assert not Path("/proc/gradstep-runs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits do not stop root")
def test_an_unwritable_run_dir_is_named(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = workdir / "locked"
    locked.mkdir(mode=0o500)
    try:
        code = main(["fit", *_set("run.dir=locked", "train.epochs=1", "data.source=random")])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "[run] dir = 'locked': cannot create a run directory there: Permission denied" in err
    assert list(locked.iterdir()) == []


def test_create_run_dir_keeps_every_run_inside_its_parent(tmp_path: Path) -> None:
    parent = tmp_path / "runs"
    for name in ("../x", ".", "..", "", "a/b", "a\x00b"):
        with pytest.raises(UserError, match=r"^\[run\] name = "):
            create_run_dir(parent, name)
    assert not parent.exists()
    assert create_run_dir(parent, "exp") == parent / "exp"
    assert create_run_dir(parent, "exp") == parent / "exp-2"
    long = "x" * 200  # the longest name, and the suffix a taken one grows
    assert create_run_dir(parent, long).name == long
    assert create_run_dir(parent, long).name == long + "-2"


def test_a_type_error_inside_a_data_function_keeps_its_traceback(tmp_path: Path) -> None:
    """Only a call that fails at the call (wrong signature) is the user's config mistake; a bug
    inside the user's function is theirs to see, with its traceback."""
    (tmp_path / "data.py").write_text("def load():\n    return len(3)\n")
    with pytest.raises(TypeError, match="has no len"):
        load_source(DataSection(source="data.py:load"), 0, tmp_path)
    (tmp_path / "args.py").write_text("def load(path):\n    return path\n")
    with pytest.raises(UserError, match="cannot be called without arguments .*'path'"):
        load_source(DataSection(source="args.py:load"), 0, tmp_path)


def test_the_class_id_check_never_trips_on_dense_labels() -> None:
    many = torch.arange(150_001)  # 150,001 classes, each with a sample: allowed
    check_class_ids((torch.zeros(len(many), 1), many), len(many), "x")
    few = torch.tensor([0, 1, 99_999])  # up to 100,000 classes: allowed, however few samples
    check_class_ids((torch.zeros(3, 1), few), 3, "x")
    with pytest.raises(UserError, match="x: the largest label is 100000, which makes 100,001"):
        check_class_ids((torch.zeros(3, 1), torch.tensor([0, 1, 100_000])), 3, "x")
