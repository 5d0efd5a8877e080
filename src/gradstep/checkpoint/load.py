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

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from torch import nn

from gradstep.checkpoint.files import (
    MANIFEST,
    STEP_DIR,
    CheckpointError,
    check_finite,
    read_json,
    read_tensors,
    refuse_non_checkpoint,
    verify,
)
from gradstep.checkpoint.writer import step_dirs
from gradstep.errors import UserError

if TYPE_CHECKING:
    from gradstep.predictor import Predictor

Warn = Callable[[str], None]


@dataclass
class Checkpoint:
    """A verified checkpoint: its path, manifest, ``model.json`` and (on demand) the rest.

    Every file is read through :meth:`read_file`: only files its manifest lists, never
    through a symlink (see :func:`~gradstep.checkpoint.files.open_plain`)."""

    path: Path
    manifest: dict[str, Any]
    model_info: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.manifest.get("step", 0))

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def listed(self, name: str) -> Path:
        """``path / name``, which the manifest must list: an unlisted file is never read."""
        if not self.has(name):
            raise CheckpointError(f"{self.path}: {name} is not listed in its manifest")
        return self.path / name

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return read_tensors(self.listed("model.safetensors"))

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        return read_tensors(self.listed("optimizer.safetensors"))

    def state(self) -> dict[str, Any]:
        return read_json(self.listed("state.json"))

    @property
    def run_dir(self) -> Path | None:
        """The run directory this checkpoint belongs to, if it sits inside one."""
        run = self.path.resolve().parent.parent
        return run if (run / "config.toml").is_file() else None


def _in_folder(link: Path, folder: Path) -> bool:
    """True when ``link`` (``best`` / ``latest``) resolves to a step directory of ``folder``
    itself: a link that leads out of its run (into another run, anywhere) is not honoured."""
    try:
        real = link.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, a loop, unreadable
        return False
    return real.parent == folder.resolve() and STEP_DIR.match(real.name) is not None


def _own_folder(run: Path, folder: Path) -> bool:
    """``run/checkpoints`` is the run's own folder, not a symlink to another run's."""
    return folder == run or folder.resolve() == run.resolve() / folder.name


def candidates(path: str | Path, warn: Warn | None = None) -> tuple[list[Path], bool]:
    """The checkpoints ``path`` names, best first, and whether it names exactly one.

    A checkpoint directory (or a ``best`` / ``latest`` link that stays in its run) is the one;
    a run directory (or its ``checkpoints`` folder) gives ``best``, ``latest``, then every
    ``step-N`` directory newest first (by step number), so that a caller can fall back past
    one that does not verify. Links that lead out of the run are ignored, with a warning."""
    p = Path(path)
    if p.name in ("best", "latest") and os.path.islink(p):
        if not _in_folder(p, p.parent):
            raise CheckpointError(f"{p}: does not point at a checkpoint of its own run")
        return [p], True
    if os.path.lexists(p / MANIFEST):
        return [p], True
    for folder in (p / "checkpoints", p):
        try:
            if not folder.is_dir() or not _own_folder(p, folder):
                continue
            found: list[Path] = []
            for link in ("best", "latest"):
                if os.path.lexists(folder / link):
                    if _in_folder(folder / link, folder):
                        found.append(folder / link)
                    elif warn is not None:
                        warn(f"{folder / link} does not point at a checkpoint of this run: ignored")
            steps = [d for _, d in reversed(step_dirs(folder))]
        except OSError as err:
            raise CheckpointError(f"{folder}: cannot read: {err.strerror or err}") from None
        if found or steps:
            real = {q.resolve() for q in found}
            return found + [d for d in steps if d.resolve() not in real], False
    if p.is_dir() and (p / "config.toml").is_file():
        raise CheckpointError(f"{p}: a run directory without checkpoints")
    refuse_non_checkpoint(p)
    raise AssertionError("unreachable")  # refuse_non_checkpoint raises


def resolve(path: str | Path) -> Path:
    """The checkpoint directory ``path`` names first (see :func:`candidates`), unverified."""
    return candidates(path)[0][0]


def failure(err: BaseException) -> str:
    """One line for any failure to read one checkpoint (a crafted file may fail in any way)."""
    if isinstance(err, CheckpointError):
        return str(err)
    if isinstance(err, RecursionError):
        return "nested too deeply to read"
    if isinstance(err, OSError):
        return f"cannot read: {err.strerror or err}"
    return f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def _open_one(p: Path) -> Checkpoint:
    manifest = verify(p)
    ckpt = Checkpoint(p, manifest, {})
    ckpt.model_info = read_json(ckpt.listed("model.json"))
    return ckpt


def open_checkpoint(path: str | Path, warn: Warn | None = None) -> Checkpoint:
    """Resolve ``path``, verify the manifest, and read ``model.json``.

    For a run directory, a checkpoint that cannot be used — it does not verify, cannot be read
    (permissions), or fails to parse in any way — is skipped with a ``warn`` line and the next
    is tried (``best``, ``latest``, then the newest step first); one named checkpoint is
    that one or a :class:`CheckpointError`. Never a traceback for a bad file."""
    found, one = candidates(path, warn)
    first = None
    for p in found:
        try:
            return _open_one(p)
        except Exception as err:  # any failure of one checkpoint: skip it (see failure())
            line = failure(err)
            if one:
                raise CheckpointError(line) from None
            first = first or line
            if warn is not None:
                warn(f"skipped checkpoint {p.name}: {line}")
    raise CheckpointError(f"{path}: no checkpoint verifies ({first})")


def newest_good(directory: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint in ``directory`` that verifies, and a line for each one skipped
    (one that fails in any way is skipped: corrupt, unreadable, crafted)."""
    skipped: list[str] = []
    for _, p in reversed(step_dirs(directory)):
        try:
            ckpt = _open_one(p)
            for name in ("model", "optimizer"):  # parses, and holds no NaN
                tensors = getattr(ckpt, f"{name}_tensors")()
                check_finite(tensors, p / f"{name}.safetensors", allow_inf=tensors.keys())
            saved, step = ckpt.state().get("step"), ckpt.manifest.get("step")
            if isinstance(step, int) and saved != step:  # files of two checkpoints mixed
                raise CheckpointError(f"{p}: state.json is step {saved}'s, the manifest {step}'s")
            from gradstep.checkpoint.schema import check_state

            check_state(ckpt.state(), p)  # a crafted state.json is skipped like a corrupt one
            return ckpt, skipped
        except Exception as err:  # any failure of one checkpoint: skip it (see failure())
            skipped.append(f"skipped checkpoint {p.name}: {failure(err)}")
    return None, skipped


def build_model_from(
    info: dict[str, Any],
    code_dir: str | Path | None = None,
    checkpoint: Path | None = None,
    trust_code: bool = False,
) -> nn.Module:
    """Construct the model ``model.json`` describes, with its saved constructor arguments.

    The checkpoint's name is subject to the trust rule (:mod:`gradstep.trust`): a zoo model;
    a ``"file.py:Class"`` looked up in ``code_dir`` (default: the working directory) whose real
    path lies inside it and outside every run and checkpoint — never where the checkpoint
    says (``base_dir`` is not used), never inside it, never at an absolute path it names; a
    ``package.module:Class`` only if your process has imported that module already, or with
    ``trust_code=True``. Refused names are refused before anything is imported.
    """
    from gradstep.models import build_model
    from gradstep.trust import CodeTrust, trust_rule

    name = info.get("name")
    if not isinstance(name, str):
        raise CheckpointError("model.json: no model name")
    if ":" in name and ".py:" not in name and name.rpartition(":")[0] in ("__main__", "builtins"):
        raise CheckpointError(
            f"the model class {name!r} was defined in a script, so it cannot be found again; "
            "build it yourself and pass it: gs.load_model(path, model=MyNet(...))"
        )
    args = info.get("args", {})
    if not isinstance(args, dict):
        raise CheckpointError("model.json: args is not an object")
    run = None
    if checkpoint is not None:
        real = checkpoint.resolve()
        run = real.parent.parent if real.parent.name == "checkpoints" else real
    rule = CodeTrust.make(code_dir, trust_code, (checkpoint, run))
    target = name.rpartition(":")[0]
    if target.endswith(".py") and not (rule.code_dir / target).is_file() and not trust_code:
        raise CheckpointError(
            f"model {name!r}: {target} not found in {rule.code_dir}; pass the folder that holds "
            "it (--code-dir DIR, or load_model(..., code_dir=DIR))"
        )
    try:
        with trust_rule(rule):
            model, _ = build_model(name, dict(args), None, rule.code_dir)
    except UserError as err:
        raise CheckpointError(f"cannot rebuild the checkpoint's model: {err}") from None
    return model


def weights_mismatch(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``tensors`` from being ``own``'s values — tensors missing, unexpected, of
    another shape or of another dtype (refused, not cast: a cast would hide a checkpoint of
    another model) — or None when they fit."""
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    dtypes = [k for k in own if k in tensors and own[k].dtype != tensors[k].dtype]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}")
    if shapes:
        k = shapes[0]
        parts.append(f"{k} is {tuple(tensors[k].shape)} there, {tuple(own[k].shape)} here")
    if dtypes:
        k = dtypes[0]
        parts.append(f"{k} is {tensors[k].dtype} there, {own[k].dtype} here")
    return "; ".join(parts) or None


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path | str) -> None:
    """``model.load_state_dict(tensors)``, or a :class:`CheckpointError` naming the tensors that
    are missing, unexpected, or of another shape or dtype (``where`` names the file)."""
    why = weights_mismatch(model.state_dict(), tensors)
    if why is not None:
        raise CheckpointError(f"{where}: weights do not fit the model: {why}")
    model.load_state_dict(tensors)


def load_weights(model: nn.Module, ckpt: Checkpoint) -> nn.Module:
    """Load the checkpoint's weights into ``model``; a mismatch names the tensors, and so does a
    NaN anywhere or an Inf in a parameter (buffers may hold ``-inf`` masks)."""
    tensors = ckpt.model_tensors()
    buffers = {name for name, _ in model.named_buffers()}
    check_finite(tensors, ckpt.path / "model.safetensors", allow_inf=buffers)
    load_state(model, tensors, ckpt.path)
    return model


@overload
def load_model(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    preprocessing: Literal[True] = True,
    device: str | torch.device = "cpu",
    code_dir: str | Path | None = None,
    trust_code: bool = False,
) -> Predictor: ...


@overload
def load_model(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    preprocessing: Literal[False],
    device: str | torch.device = "cpu",
    code_dir: str | Path | None = None,
    trust_code: bool = False,
) -> nn.Module: ...


@overload
def load_model(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    preprocessing: bool = True,
    device: str | torch.device = "cpu",
    code_dir: str | Path | None = None,
    trust_code: bool = False,
) -> nn.Module: ...


def load_model(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    preprocessing: bool = True,
    device: str | torch.device = "cpu",
    code_dir: str | Path | None = None,
    trust_code: bool = False,
) -> nn.Module:
    """Rebuild the model a checkpoint saved, load its weights, and put the training
    preprocessing in front of it: a :class:`~gradstep.predictor.Predictor`, in eval mode.

    **What it takes.** The returned predictor takes raw input, as the data source gave it: a
    CSV's feature columns as numbers (the training split's mean/std are applied for you),
    images as uint8 pixels (divided by 255) or as float in [0, 1] (what the MNIST source
    gives), flat or in the training sample shape — with a batch dimension. It runs
    :func:`gradstep.inference.prepare_input` with the checkpoint's ``model.json`` and then the
    network, so ``load_model(ckpt)(x_raw)`` equals ``gradstep predict ckpt`` and
    ``trainer.predict(x_raw)``. **What it returns:** the network's outputs — logits for a
    classifier (``.argmax(1)`` is the class; ``.softmax(1)`` the ``prob_*`` columns of
    ``gradstep predict``), values for regression — on ``device``. ``predictor.network`` is the
    bare model, and ``predictor.state_dict()`` is the bare model's (see
    :class:`~gradstep.predictor.Predictor`).

    With ``preprocessing=False`` it returns the bare network instead, which takes *prepared*
    input: float32, in the training sample shape, already normalised with the training
    split's mean/std — what the training batches held (``predictor.preprocess(x_raw)``).

    Args:
        path: a checkpoint, ``best`` / ``latest``, or a run directory (its best checkpoint;
            one that does not verify is skipped with a warning).
        model: an instance to load the weights into instead of rebuilding one from the saved
            name and args (for a class defined in a script, or one that did not record its
            arguments); it is returned wrapped in the predictor like a rebuilt one (the
            preprocessing comes from the checkpoint), or bare with ``preprocessing=False``.
        preprocessing: put the training preprocessing in front (default), or return the bare
            network.
        device: where to put it.
        code_dir: the folder holding a ``"file.py:Class"`` model's file (default: the working
            directory; see :func:`build_model_from`).
        trust_code: import whatever module or file the checkpoint names. Only for checkpoints
            you trust as you trust code: a checkpoint is otherwise data, and what it names is
            imported only under the rule in :mod:`gradstep.trust`.

    Example::

        predictor = gs.load_model("runs/mnist_simplenet")     # its best checkpoint
        predictor(images_uint8).argmax(1)                        # raw (N, 28, 28) uint8
        net = gs.load_model("runs/mnist_simplenet", preprocessing=False)
        net(predictor.preprocess(images_uint8))                  # the same outputs

    Never unpickles: weights come from ``model.safetensors`` after the manifest verifies.
    """
    from gradstep.predictor import Predictor

    ckpt = open_checkpoint(path, _python_warning)
    if model is None:
        model = _rebuild(ckpt, code_dir, trust_code)
    load_weights(model, ckpt)
    model = model.to(device)
    if preprocessing:
        return Predictor(model, ckpt.model_info).to(device).eval()
    return model.eval()


def _rebuild(ckpt: Checkpoint, code_dir: str | Path | None, trust_code: bool) -> nn.Module:
    """:func:`build_model_from`, with a hint when the model was an instance whose constructor
    did not record its arguments (the checkpoint names a class but no args)."""
    try:
        return build_model_from(ckpt.model_info, code_dir, ckpt.path, trust_code)
    except CheckpointError as err:
        from gradstep.models import ZOO

        name, args = ckpt.model_info.get("name"), ckpt.model_info.get("args")
        if args or name in ZOO or "cannot rebuild" not in str(err):
            raise
        raise CheckpointError(
            f"{err}. If the model was passed to fit() as an instance, record its constructor "
            "arguments with gs.save_init_args(self) in its __init__, or build it yourself: "
            "gs.load_model(path, model=MyNet(...))"
        ) from None


def _python_warning(message: str) -> None:
    import warnings

    warnings.warn(message, UserWarning, stacklevel=3)


def load_for_inference(
    path: str | Path,
    device: str = "cpu",
    code_dir: str | Path | None = None,
    trust_code: bool = False,
    warn: Warn | None = None,
) -> tuple[Checkpoint, nn.Module]:
    """The verified checkpoint and its rebuilt bare model with the weights, in eval mode (it
    takes prepared input: see :func:`gradstep.inference.prepare_input`)."""
    ckpt = open_checkpoint(path, warn)
    model = build_model_from(ckpt.model_info, code_dir, ckpt.path, trust_code)
    load_weights(model, ckpt)
    return ckpt, model.to(device).eval()
