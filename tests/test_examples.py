"""The examples run, and the MNIST recipe reaches the tutorial's accuracy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gradstep as gs
from gradstep.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    load_config(path)


def test_mnist_simplenet_reaches_95_percent(mnist_dir, runs):
    trainer = gs.Trainer.from_config(EXAMPLES / "mnist_simplenet.toml", [f"run.dir={runs}"])
    result = trainer.fit()
    assert result.summary["data"]["train_samples"] == 8000
    assert result.summary["global_step"] == 1250  # 125 batches of 64 × 10 epochs
    assert result.history[-1]["val_acc"] >= 0.95


def test_custom_model_and_digits_cnn_examples_train(runs):
    for name in ("custom_model.toml", "digits_cnn.toml"):
        trainer = gs.Trainer.from_config(EXAMPLES / name, [f"run.dir={runs}", "train.epochs=3"])
        result = trainer.fit()
        assert result.history[-1]["val_acc"] > 0.7, name


def test_python_api_example_runs():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "final validation accuracy: 0.9" in proc.stdout


@pytest.mark.parametrize("data", ["breast_cancer", "mnist"])
def test_the_newcomer_path_gives_validations_accuracy(data, request):
    """fit -> gs.load_model -> call it on the validation rows as the file holds them: the
    accuracy validation reported (README: what a loaded model expects)."""
    args = [data] + ([str(request.getfixturevalue("mnist_dir"))] if data == "mnist" else [])
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "load_and_predict.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "the same accuracy"
    results = [line.split(": ") for line in lines[-4 if data == "mnist" else -3 : -1]]
    accuracies = {what.strip(): float(acc.rstrip("%")) for what, acc in results}
    assert accuracies["validation"] > (90 if data == "mnist" else 93), accuracies
    assert len(set(accuracies.values())) == 1, accuracies
