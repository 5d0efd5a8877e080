"""Exported models run with plain PyTorch and match gradstep's predictions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep.cli import main

# Run in a fresh interpreter that never imports gradstep: the exported file must stand alone.
LOADER = """
import sys, numpy as np, torch
fmt, path, x_path, out_path = sys.argv[1:]
m = torch.export.load(path).module() if fmt == "pt2" else torch.jit.load(path)
x = torch.from_numpy(np.load(x_path))
with torch.no_grad():
    np.save(out_path, m(x).numpy())
    m(x[:1])  # the batch dimension is dynamic
assert not any(name.startswith("gradstep") for name in sys.modules)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    trainer = gs.Trainer(
        run_dir=str(runs),
        source="digits",
        model="cnn",
        epochs=1,
        progress=False,
    )
    return trainer, trainer.fit()


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_exported_model_matches_gradstep_on_raw_input(trained, tmp_path, fmt):
    trainer, result = trained
    out = tmp_path / f"model.{fmt}"
    latest = result.run_dir / "checkpoints" / "latest"
    assert main(["export", str(latest), "--format", fmt, "--out", str(out)]) == 0
    sidecar = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert sidecar["normalization_folded_in"] is True
    assert sidecar["input"]["shape"] == ["batch", 1, 8, 8]

    x = torch.rand(37, 1, 8, 8)  # raw input, as the digits source gives it
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            LOADER,
            fmt,
            str(out),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    exported = torch.from_numpy(np.load(tmp_path / "y.npy"))
    expected = trainer.predict(x)
    assert torch.allclose(exported, expected, rtol=0, atol=1e-6), (exported - expected).abs().max()


def test_export_bad_format_and_missing_folder_exit_2(trained, tmp_path, capsys):
    _, result = trained
    latest = str(result.run_dir / "checkpoints" / "latest")
    assert main(["export", latest, "--format", "pt2", "--out", "/no/such/m.pt2"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", latest, "--format", "onnx"])
    assert exc.value.code == 2


def test_a_run_of_a_compiled_model_exports_and_matches_the_loaded_predictor(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 5) * 4 + 2
    y = (x[:, 0] > 2).long()
    compiled = torch.compile(gs.models.MLP(5, 2, hidden=[8]), backend="eager")
    result = gs.Trainer(run_dir=str(tmp_path / "runs"), epochs=1, progress=False).fit(
        compiled, train=(x, y)
    )
    latest = result.run_dir / "checkpoints" / "latest"
    out = tmp_path / "m.pt2"
    assert main(["export", str(latest), "--format", "pt2", "--out", str(out)]) == 0
    exported = torch.export.load(str(out)).module()
    with torch.no_grad():
        want = gs.load_model(latest)(x)
        assert torch.allclose(exported(x), want, rtol=0, atol=1e-6)
        assert torch.allclose(result.predictor(x), want, rtol=0, atol=1e-6)
