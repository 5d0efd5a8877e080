"""Which run a restarted torchrun worker resumes (gradstep.elastic); the restarts themselves
run in tests/test_dist_resume.py."""

from __future__ import annotations

from gradstep import elastic


def test_a_restarted_worker_finds_the_run_its_job_created(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job/42")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    run = tmp_path / "exp-2"
    run.mkdir()
    (run / "config.toml").write_text("")
    elastic.record(tmp_path, run)
    assert (tmp_path / ".elastic" / "job_42.json").is_file()  # one safe file name
    assert elastic.restart_target(tmp_path) is None  # a first attempt starts its run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic.restart_target(tmp_path) == run
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another-job")
    assert elastic.restart_target(tmp_path) is None  # another job's run is never resumed


def test_no_run_directory_or_a_crafted_marker_starts_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "j")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert elastic.restart_target(tmp_path) is None  # died before creating its run
    (tmp_path / ".elastic").mkdir()
    for text in ('{"run": "../outside"}', "[1", '{"run": 3}', '{"run": "gone"}'):
        (tmp_path / ".elastic" / "j.json").write_text(text)
        assert elastic.restart_target(tmp_path) is None, text


def test_outside_torchrun_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    elastic.record(tmp_path, tmp_path / "run")
    assert not (tmp_path / ".elastic").exists()


def test_torchruns_default_id_and_a_second_fit_have_their_own_markers(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    first, second = tmp_path / "a", tmp_path / "b"
    for run in (first, second):
        run.mkdir()
        (run / "config.toml").write_text("")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # multi-node without --rdzv-id
    elastic.record(tmp_path, first)
    assert not (tmp_path / ".elastic").exists() and elastic.restart_target(tmp_path) is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    elastic.record(tmp_path, first, 0)
    elastic.record(tmp_path, second, 1)  # the script's second fit
    assert elastic.restart_target(tmp_path, 0) == first
    assert elastic.restart_target(tmp_path, 1) == second
