"""Shared fixtures: the real MNIST test split from ../shared/data, quiet tiny runs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def no_plots_by_default(monkeypatch):
    """Rendering PNGs costs ~0.3 s a run; tests of plots and reports ask for them."""
    monkeypatch.setattr("gradstep.config.sections.PLOTS_DEFAULT", False)


@pytest.fixture
def mnist_dir() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST data not found at {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A fresh parent folder for run directories."""
    return tmp_path / "runs"
