"""A checkpoint's state.json is data: one crafted (and re-sealed, so that it verifies) is refused
by the schema naming the key, before anything on disk changes; resume falls back past it."""

from __future__ import annotations

import base64
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep.checkpoint.files import CheckpointError, manifest_bytes, sha256_file, verify
from gradstep.checkpoint.schema import MAX_DEPTH, check_state
from gradstep.cli import main

# 64 samples, 13 for validation: 51 train, batch 16 -> 4 batches (steps) an epoch, 2 epochs = 8
# steps; checkpoints at steps 3, 6 (mid-epoch 2) and 8 (the end)
SETTINGS: dict[str, Any] = dict(
    source="random",
    n=64,
    epochs=2,
    batch_size=16,
    progress=False,
    plots=False,
    tensorboard=False,
    checkpoint_every=3,
    patience=5,
)
NEWEST, OLDER = "step-000008", "step-000006"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("schema")
    run = gs.Trainer(run_dir=str(runs), name="run", **SETTINGS).fit().run_dir
    assert run is not None
    steps = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert steps == ["step-000003", OLDER, NEWEST]
    return run


def reseal(ckpt: Path) -> None:
    """Record state.json's new size and SHA-256 in the manifest: anyone can, so it verifies."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["state.json"].update(
        bytes=(ckpt / "state.json").stat().st_size, sha256=sha256_file(ckpt / "state.json")
    )
    (ckpt / "manifest.json").write_bytes(manifest_bytes(manifest))
    verify(ckpt)


DELETE = object()


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _python_index_past_key(words: str) -> str:
    raw = bytearray(base64.b64decode(words))
    raw[-4:] = (625).to_bytes(4, "little")  # the index Python's random keeps in its last word
    return base64.b64encode(bytes(raw)).decode()


def _b64(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


# a mutation of the newest checkpoint's state.json: the key path to set (list items by index),
# the value (DELETE: remove the key; a function: of the old value), the key the error must name
MUTATIONS = [
    pytest.param("progress.epoch", "2", "progress.epoch", id="epoch_wrong_type"),
    pytest.param("progress", DELETE, "progress", id="progress_missing"),
    pytest.param("rng", DELETE, "rng", id="rng_missing"),
    pytest.param("rng.torch", "not*base64!", "rng.torch", id="torch_rng_bad_base64"),
    pytest.param("rng.torch", _b64(100), "rng.torch", id="torch_rng_wrong_length"),
    pytest.param("rng.torch", _b64(5056), "rng.torch", id="torch_rng_torch_refuses"),
    pytest.param("rng.numpy.1", _b64(40), "rng.numpy[1]", id="numpy_key_of_10_words"),
    pytest.param("rng.numpy.2", 625, "rng.numpy[2]", id="numpy_pos_past_key"),
    pytest.param("rng.python.1", _python_index_past_key, "rng.python[1]", id="python_index"),
    pytest.param("progress.global_step", -5, "progress.global_step", id="negative_global_step"),
    pytest.param("progress.batch", 99, "progress.batch", id="batch_past_epoch"),
    pytest.param("optimizer.scalars", {"99": {"step": 1}}, "scalars.99", id="unknown_param"),
    pytest.param("optimizer.param_groups", {"lr": 0.1}, "param_groups", id="groups_not_a_list"),
    pytest.param("optimizer.param_groups.0.params", [1, 0, 2, 3], "params", id="params_swapped"),
    pytest.param("optimizer.param_groups.0.amsgrad", True, "amsgrad", id="optimizer_flag"),
    pytest.param(
        "meter",
        {"samples": -3, "total": None, "window": None, "window_n": 0},
        "meter.samples",
        id="meter_negative_count",
    ),
    pytest.param("progress.in_epoch", True, "meter", id="in_epoch_without_meter"),
    pytest.param("metrics_bytes", -1, "metrics_bytes", id="metrics_bytes_negative"),
    pytest.param("callbacks.EarlyStopping.wait", "3", "EarlyStopping.wait", id="callback_type"),
    pytest.param("callbacks.Checkpointer.best_name", "../../x", "best_name", id="best_outside"),
    pytest.param("callbacks.GradMonitor.epoch", [0.0, 0.0], "GradMonitor.epoch", id="short"),
    pytest.param("history", {"epoch": 1}, "history", id="history_not_a_list"),
    pytest.param("history.0.train_loss", "low", "history[0].train_loss", id="history_value"),
    pytest.param("config.model.args", {"x": _deep(MAX_DEPTH + 50)}, "config", id="too_deep"),
]


def mutate(state: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = state
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value(node[key]) if callable(value) else value


def crafted(trained: Path, tmp_path: Path, path: str, value: Any) -> Path:
    """A copy of the run whose newest checkpoint's state.json is mutated and re-sealed."""
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    ckpt = run / "checkpoints" / NEWEST
    state = json.loads((ckpt / "state.json").read_text())
    mutate(state, path, value)
    (ckpt / "state.json").write_text(json.dumps(state))
    reseal(ckpt)
    return run


def test_every_state_a_run_writes_passes(trained):
    for ckpt in sorted((trained / "checkpoints").glob("step-*")):
        check_state(json.loads((ckpt / "state.json").read_text()), ckpt)


class Counter(gs.Callback):
    """A user's callback with state of its own (any JSON object)."""

    def __init__(self) -> None:
        self.n = 0

    def on_step_end(self, state: Any) -> None:
        self.n += 1

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "nested": {"seen": [self.n, None, "x"]}}


@pytest.mark.parametrize(
    "schedule",
    ["step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau"],
)
def test_states_of_runs_with_every_feature_pass(tmp_path, schedule):
    """Schedules of every kind, early stopping that stops, grad_norm_peak, accumulation,
    mid-epoch checkpoints, skipped non-finite steps, a user callback with state."""
    kinds = ["step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau"]
    odd = kinds.index(schedule) % 2
    settings = dict(
        SETTINGS,
        n=40,
        epochs=3,
        batch_size=4,
        schedule=schedule,
        schedule_interval="step" if odd else "epoch",
        accumulate=2 + odd,
        checkpoint_every=1 + odd,
        checkpoint_keep=50,
        patience=1,
        min_delta=0.0 if odd else 10.0,  # nothing improves by 10: stops after epoch 2
        on_nonfinite="skip" if odd else "fail",
        checkpoint_policy="grad_norm_peak" if odd else "best",
        peak_fluctuation=5.0,
        peak_window=2,
        log_every=1,
    )
    if schedule == "multistep":  # steps that diverge, skipped (nothing for early stopping)
        settings.update(optimizer="sgd", lr=1e30, patience=None)
    result = gs.Trainer(run_dir=str(tmp_path), callbacks=[Counter()], **settings).fit()
    ckpts = sorted((result.run_dir / "checkpoints").glob("step-*"))
    assert len(ckpts) >= 3
    mid = 0
    for ckpt in ckpts:
        state = json.loads((ckpt / "state.json").read_text())
        assert state["callbacks"]["Counter"]["n"] > 0
        mid += state["progress"]["in_epoch"]
        check_state(state, ckpt)
    assert mid > 0  # some were taken inside an epoch, with its running metrics
    if schedule == "multistep":
        assert state["callbacks"]["GradMonitor"]["skipped"]


@pytest.mark.parametrize(("path", "value", "key"), MUTATIONS)
def test_a_crafted_state_is_refused_naming_the_key(trained, tmp_path, path, value, key):
    run = crafted(trained, tmp_path, path, value)
    ckpt = run / "checkpoints" / NEWEST
    with pytest.raises(CheckpointError) as info:
        check_state(json.loads((ckpt / "state.json").read_text()), ckpt)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{ckpt}: state.json: "), message
    assert key in message.partition("state.json: ")[2], message


@pytest.mark.parametrize(("path", "value", "key"), MUTATIONS)
def test_resume_skips_a_crafted_checkpoint_like_a_corrupt_one(
    trained, tmp_path, capsys, path, value, key
):
    run = crafted(trained, tmp_path, path, value)
    capsys.readouterr()
    assert main(["resume", str(run), "--set", "train.epochs=3"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    skipped = [line for line in err.splitlines() if f"skipped checkpoint {NEWEST}" in line]
    assert len(skipped) == 1 and key in skipped[0], err
    assert f"resumed from {OLDER}" in out
    # the crafted checkpoint was moved aside (newer than the one resumed from), never used
    assert list((run / "checkpoints").glob(f"{NEWEST}.orphaned-*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 12 and summary["resumed_from"]["step"] == 6


@pytest.mark.parametrize(("path", "value", "key"), MUTATIONS[::2])
def test_resuming_a_crafted_checkpoint_by_name_is_one_line_and_changes_nothing(
    trained, tmp_path, path, value, key
):
    run = crafted(trained, tmp_path, path, value)
    before = {p.relative_to(run): p.stat().st_size for p in run.rglob("*") if p.is_file()}
    config = (run / "config.toml").read_text()
    trainer = gs.Trainer(run_dir=str(tmp_path), name="other", **SETTINGS)
    with pytest.raises(CheckpointError) as info:
        trainer.fit(resume=run / "checkpoints" / NEWEST)
    assert "\n" not in str(info.value) and key in str(info.value)
    after = {p.relative_to(run): p.stat().st_size for p in run.rglob("*") if p.is_file()}
    assert after == before and (run / "config.toml").read_text() == config
    assert not (tmp_path / "other").exists()


def test_checking_touches_no_global_generator(trained):
    ckpt = trained / "checkpoints" / NEWEST
    state = json.loads((ckpt / "state.json").read_text())
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    check_state(state, ckpt)
    assert random.getstate() == before[0]
    assert (np.random.get_state()[1] == before[1]).all()
    assert torch.equal(torch.get_rng_state(), before[2])
