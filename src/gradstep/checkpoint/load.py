"""Find, verify and read checkpoints; rebuild a model from one.

Paths a user may give (to ``gs.load_model``, ``gradstep eval / predict / export / resume``):

* a checkpoint directory ``runs/x/checkpoints/step-000123``;
* ``runs/x/checkpoints/best`` or ``.../latest``;
* a run directory ``runs/x`` or its ``checkpoints`` folder: its ``best`` checkpoint (``latest``
  when there is no best).

Anything else — a pickle file (``.pt``, ``.pth``, ``.pkl``, or bytes that start like one), a
stray file, a directory without a manifest — is refused with a message that says why. A
checkpoint is read only after its manifest verifies, and nothing read can execute code: a
custom model's code is imported only from a folder the user names (:func:`build_model_from`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradstep.checkpoint.files import (
    MANIFEST,
    CheckpointError,
    check_finite,
    read_json,
    read_tensors,
    refuse_non_checkpoint,
    verify,
)
from gradstep.checkpoint.writer import step_dirs
from gradstep.errors import UserError


@dataclass
class Checkpoint:
    """A verified checkpoint: its path, manifest, ``model.json`` and (on demand) the rest."""

    path: Path
    manifest: dict[str, Any]
    model_info: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.manifest.get("step", 0))

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return read_tensors(self.path / "model.safetensors")

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        return read_tensors(self.path / "optimizer.safetensors")

    def state(self) -> dict[str, Any]:
        return read_json(self.path / "state.json")

    @property
    def run_dir(self) -> Path | None:
        """The run directory this checkpoint belongs to, if it sits inside one."""
        run = self.path.resolve().parent.parent
        return run if (run / "config.toml").is_file() else None


def resolve(path: str | Path) -> Path:
    """The checkpoint directory ``path`` names (see the module docstring), unverified."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    for folder in (p / "checkpoints", p):
        for link in ("best", "latest"):
            if (folder / link / MANIFEST).is_file():
                return folder / link
        dirs = step_dirs(folder)
        if dirs:
            return dirs[-1][1]
    if p.is_dir() and (p / "config.toml").is_file():
        raise CheckpointError(f"{p}: a run directory without checkpoints")
    refuse_non_checkpoint(p)
    raise AssertionError("unreachable")  # refuse_non_checkpoint raises


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Resolve ``path``, verify the manifest, and read ``model.json``."""
    p = resolve(path)
    manifest = verify(p)
    return Checkpoint(p, manifest, read_json(p / "model.json"))


def newest_good(directory: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint in ``directory`` that verifies, and a line for each one skipped."""
    skipped: list[str] = []
    for _, p in reversed(step_dirs(directory)):
        try:
            ckpt = open_checkpoint(p)
            for name in ("model", "optimizer"):  # parses, and holds no NaN
                tensors = getattr(ckpt, f"{name}_tensors")()
                check_finite(tensors, p / f"{name}.safetensors", allow_inf=tensors.keys())
            saved, step = ckpt.state().get("step"), ckpt.manifest.get("step")
            if isinstance(step, int) and saved != step:  # files of two checkpoints mixed
                raise CheckpointError(f"{p}: state.json is step {saved}'s, the manifest {step}'s")
            return ckpt, skipped
        except CheckpointError as err:
            skipped.append(f"skipped checkpoint {p.name}: {err}")
    return None, skipped


def build_model_from(
    info: dict[str, Any], code_dir: str | Path | None = None, checkpoint: Path | None = None
) -> nn.Module:
    """Construct the model ``model.json`` describes, with its saved constructor arguments.

    A zoo name or an installed ``package.module:Class`` is imported as usual. A
    ``"file.py:Class"`` model's file is looked up relative to ``code_dir`` (default: the working
    directory) — never where the checkpoint says, never inside the checkpoint, never at an
    absolute path it names — so a checkpoint from elsewhere cannot make gradstep run code it
    carries or points at. (``gradstep resume`` is different: like ``fit``, it runs the run's
    config.)
    """
    from gradstep.importing import is_import_spec
    from gradstep.models import build_model

    name = info.get("name")
    if not isinstance(name, str):
        raise CheckpointError("model.json: no model name")
    if ":" in name and ".py:" not in name and name.rpartition(":")[0] in ("__main__", "builtins"):
        raise CheckpointError(
            f"the model class {name!r} was defined in a script, so it cannot be found again; "
            "build it yourself and pass it: gs.load_model(path, model=MyNet(...))"
        )
    base = Path(code_dir) if code_dir is not None else Path.cwd()
    if is_import_spec(name) and name.rpartition(":")[0].endswith(".py"):
        file = Path(name.rpartition(":")[0])
        where = (base / file).resolve()
        inside = checkpoint is not None and where.is_relative_to(checkpoint.resolve())
        if file.is_absolute() or inside:
            raise CheckpointError(
                f"model {name!r}: gradstep imports a model's code only from the folder you name "
                "(--code-dir, or load_model(..., code_dir=)), not from a path a checkpoint gives"
            )
        if not where.is_file():
            raise CheckpointError(
                f"model {name!r}: {file} not found in {base}; pass the folder that holds it "
                "(--code-dir DIR, or load_model(..., code_dir=DIR))"
            )
    try:
        model, _ = build_model(name, dict(info.get("args", {})), None, base)
    except UserError as err:
        raise CheckpointError(f"cannot rebuild the checkpoint's model: {err}") from None
    return model


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path | str) -> None:
    """``model.load_state_dict(tensors)``, or a :class:`CheckpointError` naming the tensors that
    are missing, unexpected or of another shape (``where`` names the file)."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if shapes:
            k = shapes[0]
            parts.append(f"{k} is {tuple(tensors[k].shape)} there, {tuple(own[k].shape)} here")
        raise CheckpointError(f"{where}: weights do not fit the model: {'; '.join(parts)}")
    model.load_state_dict(tensors)


def load_weights(model: nn.Module, ckpt: Checkpoint) -> nn.Module:
    """Load the checkpoint's weights into ``model``; a mismatch names the tensors, and so does a
    NaN anywhere or an Inf in a parameter (buffers may hold ``-inf`` masks)."""
    tensors = ckpt.model_tensors()
    buffers = {name for name, _ in model.named_buffers()}
    check_finite(tensors, ckpt.path / "model.safetensors", allow_inf=buffers)
    load_state(model, tensors, ckpt.path)
    return model


def load_model(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    code_dir: str | Path | None = None,
) -> nn.Module:
    """Rebuild the model a checkpoint saved and load its weights, in eval mode.

    Args:
        path: a checkpoint, ``best`` / ``latest``, or a run directory (its best checkpoint).
        model: an instance to load into instead of rebuilding (for classes defined in a script).
        device: where to put it.
        code_dir: the folder holding a ``"file.py:Class"`` model's file (default: the working
            directory; see :func:`build_model_from`).

    Example::

        model = gs.load_model("runs/mnist_simplenet")           # its best checkpoint
        model(x).argmax(1)

    Never unpickles: weights come from ``model.safetensors`` after the manifest verifies.
    """
    ckpt = open_checkpoint(path)
    if model is None:
        model = build_model_from(ckpt.model_info, code_dir, ckpt.path)
    load_weights(model, ckpt)
    return model.to(device).eval()


def load_for_inference(
    path: str | Path, device: str = "cpu", code_dir: str | Path | None = None
) -> tuple[Checkpoint, nn.Module]:
    """The verified checkpoint and its rebuilt model with the weights, in eval mode."""
    ckpt = open_checkpoint(path)
    model = build_model_from(ckpt.model_info, code_dir, ckpt.path)
    load_weights(model, ckpt)
    return ckpt, model.to(device).eval()
