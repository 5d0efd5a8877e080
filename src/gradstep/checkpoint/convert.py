"""``gradstep convert``: import a trusted legacy ``torch.save`` state_dict as a gradstep checkpoint.

The one place gradstep reads a pickle, and only through ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers (no classes, no functions: a file that would
run code on unpickling is rejected, not executed). The state_dict may be the file's top level or
under ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` (the usual tutorial layouts). The
model is rebuilt from ``--model`` and ``--set model.args.KEY=VALUE``, the weights must fit it
exactly, and the result is a normal checkpoint directory (safetensors + JSON + manifest) that
``load_model``, ``eval``, ``predict`` and ``export`` accept.

Example::

    gradstep convert old_model.pth --model simplenet --set model.args.input_size=784 \\
        --input-shape 1,28,28 --out converted/
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from gradstep.checkpoint.encoding import tensors_to_bytes
from gradstep.checkpoint.files import CheckpointError, json_bytes, write_checkpoint_dir
from gradstep.checkpoint.load import load_state
from gradstep.errors import UserError, first_line

_NESTED = ("state_dict", "model_state_dict", "model")


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _NESTED:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: holds no state_dict (a dict of tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {bad[0]!r} is not a tensor; expected a state_dict")
    return obj


def convert_legacy(
    legacy: str | Path,
    model_name: str,
    model_args: dict[str, Any],
    out: str | Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    task: str = "multiclass",
    base_dir: Path | None = None,
) -> Path:
    """Write checkpoint directory ``out`` from the plain state_dict in ``legacy``."""
    from gradstep.models import build_model

    src, dest = Path(legacy), Path(out)
    if not src.is_file():
        raise UserError(f"{src}: file not found")
    if dest.is_file() or (dest.is_dir() and any(dest.iterdir())):
        raise UserError(f"--out {dest}: already exists and is not empty")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols says nothing useful
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(src, map_location="cpu", weights_only=True)  # never full unpickling
    except Exception as err:  # UnpicklingError, RuntimeError, ...: all mean "refused"
        first = first_line(err)
        raise CheckpointError(
            f"{src}: refused by torch.load(weights_only=True), which only reads plain tensors: "
            f"{first[:200]}"
        ) from None
    tensors = _state_dict(obj, src)
    model, args = build_model(model_name, model_args, None, base_dir)
    own = model.state_dict()
    load_state(model, tensors, src)
    outputs = next((int(v.shape[0]) for k, v in reversed(own.items()) if k.endswith("bias")), None)
    info = {
        "name": model_name,
        "args": args,
        "base_dir": str(base_dir) if base_dir else None,
        "task": task,
        "loss": {"multiclass": "cross_entropy", "binary": "bce_with_logits"}.get(task, "mse"),
        "outputs": outputs,
        "input": {"sample_shape": list(input_shape or ()), "source": "(converted)"},
        "normalize": None,
        "converted_from": str(src.resolve()),
    }
    files = {
        "model.safetensors": tensors_to_bytes(model.state_dict()),
        "model.json": json_bytes(info),
    }
    meta = {"step": 0, "created": time.time(), "converted": True}
    if dest.is_dir():
        dest.rmdir()  # empty: checked above
    write_checkpoint_dir(dest, files, meta)
    return dest


__all__ = ["convert_legacy"]
