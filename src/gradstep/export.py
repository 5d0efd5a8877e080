"""``gradstep export``: a model file that runs with plain PyTorch, without gradstep.

* ``pt2`` — ``torch.export`` (the graph and weights in one ``.pt2`` archive), loaded with
  ``torch.export.load(path).module()``;
* ``torchscript`` — ``torch.jit.trace``, loaded with ``torch.jit.load(path)`` (PyTorch has
  deprecated TorchScript; it is here for runtimes that still need it — prefer ``pt2``).

The training normalisation is folded into the exported model (``(x - mean) / std`` runs first),
so the exported model takes input exactly as the data source gives it: float features, or images
as float in [0, 1] of the training sample shape. The batch dimension is dynamic. A JSON file beside
the model (``<out>.json``) says this: input shape and dtype, what the outputs are (logits, for a
classifier), the class count, and the checkpoint it came from.

In Python, ``gs.load_model`` gives the same model with the whole preprocessing in front (a
:class:`~gradstep.predictor.Predictor`, which also takes uint8 pixels and flat rows); that one
branches on the input's dtype and shape in Python, so the file exported here folds in only the
part a traced graph can hold: :class:`Prepared`, the normalisation.

Example::

    gradstep export runs/mnist/checkpoints/best --format pt2          # writes best.pt2 + .json
    m = torch.export.load("best.pt2").module(); m(torch.rand(5, 1, 28, 28)).argmax(1)
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradstep.checkpoint.load import load_for_inference
from gradstep.checkpoint.snapshot import normalizer_from_json
from gradstep.errors import UserError, first_line
from gradstep.rundir import publish, write_atomic

FORMATS = {"pt2": ".pt2", "torchscript": ".torchscript.pt"}


class Prepared(nn.Module):
    """``model((x - mean) / std)``: the training normalisation folded in front of the model, in
    a form ``torch.export`` and ``torch.jit.trace`` can trace (no Python branching on the
    input). For Python use, :class:`~gradstep.predictor.Predictor` applies the whole
    preprocessing."""

    def __init__(self, model: nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.model = model
        self.normalize = mean is not None
        self.register_buffer("mean", mean if mean is not None else torch.zeros(()))
        self.register_buffer("std", std if std is not None else torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.model(x)


def prepared_model(model: nn.Module, info: dict[str, Any]) -> Prepared:
    norm = normalizer_from_json(info.get("normalize"))
    mean, std = (norm.mean, norm.std) if norm is not None else (None, None)
    return Prepared(model, mean, std).eval()


def _example(info: dict[str, Any], input_shape: tuple[int, ...] | None) -> torch.Tensor:
    shape = input_shape or tuple(info.get("input", {}).get("sample_shape") or ())
    if not shape:
        raise UserError(
            "the checkpoint does not record the input shape (a converted checkpoint?); "
            "pass --input-shape, e.g. --input-shape 1,28,28"
        )
    return torch.rand(4, *shape)


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    code_dir: str | Path | None = None,
    trust_code: bool = False,
    warn: Any = None,
) -> Path:
    """Export ``checkpoint`` as ``fmt`` ("pt2" or "torchscript"); return the file written.
    ``code_dir`` / ``trust_code``: where a ``file.py:Class`` model's code may come from (see
    :mod:`gradstep.trust`)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    ckpt, model = load_for_inference(
        checkpoint, code_dir=code_dir, trust_code=trust_code, warn=warn
    )
    info = ckpt.model_info
    wrapped = prepared_model(model, info)
    example = _example(info, input_shape)
    try:
        with torch.no_grad():
            wrapped(example)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first = first_line(err)
        raise UserError(
            f"the model rejects input of shape {tuple(example.shape[1:])}: {first}"
        ) from None
    path = Path(out) if out is not None else Path(ckpt.path.name + FORMATS[fmt])
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        with torch.no_grad():
            if fmt == "pt2":
                batch = torch.export.Dim("batch", min=1)
                program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, tmp)
            else:
                with warnings.catch_warnings():  # deprecated by PyTorch, still what many deploy
                    warnings.simplefilter("ignore", DeprecationWarning)
                    traced = torch.jit.trace(wrapped, example)
                traced.save(tmp)
        publish(tmp, path)
    except Exception as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise UserError(f"--out {path}: cannot write: {err.strerror or err}") from None
        raise
    sidecar = {
        "format": fmt,
        "load_with": "torch.export.load(path).module()" if fmt == "pt2" else "torch.jit.load(path)",
        "input": {
            "shape": ["batch", *example.shape[1:]],
            "dtype": "float32",
            "note": "as the data source gives it (images in [0, 1]); normalisation is folded in",
        },
        "normalization_folded_in": wrapped.normalize,
        "outputs": "logits" if info.get("task") in ("multiclass", "binary") else "values",
        "classes": info.get("outputs"),
        "task": info.get("task"),
        "checkpoint": str(ckpt.path.resolve()),
        "model": {"name": info.get("name"), "args": info.get("args")},
    }
    write_atomic(path.with_name(path.name + ".json"), json.dumps(sidecar, indent=2) + "\n")
    return path
