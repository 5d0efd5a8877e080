"""Use a checkpoint: read input files, prepare them as training did, predict, evaluate.

Input files (``gradstep predict`` / ``gradstep eval --data``):

* ``.csv`` — a header row. A run trained on a CSV recorded its feature columns' names, and
  they are picked **by name**, in any order; other columns are ignored (one note says which),
  and a missing one is an error naming it. The run's target column (``[data] target``), when
  present, is the label. Without recorded names (a run trained on arrays), every column but
  the target is a feature, in file order;
* ``.npz`` — array ``X`` (and ``y`` for eval), read without pickle; ``.npy`` — an ``X`` array;
* IDX — an images file (``*-idx3-ubyte`` or ``.gz``; labels from the matching ``idx1`` file beside
  it for eval), or a folder holding MNIST's files.

NaN or Inf in a file's input (or labels) is refused naming the file, the column or feature and
the first row.

Preparation is exactly training's, from the checkpoint's ``model.json``, in one function,
:func:`prepare_input` (what ``gs.load_model``'s predictor runs too): uint8 pixels are divided by
255 (as the MNIST source does), and so are other integer pixel arrays when training's input was
8-bit pixels; flat rows are reshaped to the training sample shape; one sample without a batch
dimension becomes a batch of one (said in one line); the training split's normalisation
(mean/std) is applied. Float images in 0-255 where training saw [0, 1] (or the reverse) are
warned about. Prediction runs in eval mode under ``torch.inference_mode``, in batches, with a
progress bar on a terminal.

Example::

    gradstep predict runs/mnist/checkpoints/best t10k-images-idx3-ubyte.gz --out preds.csv
"""

from __future__ import annotations

import csv
import io
import math
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from gradstep.checkpoint.files import CheckpointError
from gradstep.checkpoint.load import Checkpoint, load_for_inference
from gradstep.checkpoint.snapshot import normalizer_from_json
from gradstep.errors import UserError
from gradstep.rundir import write_atomic


def _idx_pair(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from gradstep.data.idx import read_idx
    from gradstep.data.mnist import labels_beside

    images = read_idx(path)
    labels_path = labels_beside(path)
    labels = read_idx(labels_path) if labels_path is not None and labels_path.is_file() else None
    return images, labels


def _say(warn: Callable[[str], None] | None) -> Callable[[str], None]:
    """``warn``, or Python's ``warnings.warn`` (an :class:`InputWarning`) for a library call."""
    if warn is not None:
        return warn

    def python_warning(message: str) -> None:
        warnings.warn(message, InputWarning, stacklevel=4)

    return python_warning


class InputWarning(UserWarning):
    """Raw input that was prepared as the user evidently meant, or that looks unlike training's
    (one sample without a batch dimension, float images in another range, unused columns)."""


def _recorded_features(info: dict[str, Any]) -> list[str] | None:
    """The CSV feature columns a checkpoint recorded, in order (None: it recorded none)."""
    names = (info.get("input") or {}).get("features")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise UserError("the checkpoint's model.json: input.features is not a list of names")
    return names


def _csv_table(
    path: Path,
    target: str,
    features: list[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(X, y_or_None)`` of a CSV file: ``features`` picked by name (see the module
    docstring), ``target`` the label column when present."""
    from gradstep.data.table import read_csv

    table = read_csv(
        path,
        target=target,
        need_target=False,
        features=features,
        why="the model was trained on it",
    )
    if features is not None and table.ignored:
        shown = ", ".join(table.ignored[:8]) + (" ..." if len(table.ignored) > 8 else "")
        _say(warn)(
            f"{path}: {len(table.ignored)} column(s) the model does not take are ignored: {shown}"
        )
    return table.x, table.y


def read_input(
    path: str | Path,
    target: str = "target",
    *,
    features: list[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, Any]:
    """``(X, y_or_None)`` from a csv / npz / npy / IDX file or an MNIST folder (raw, unprepared).

    ``features``: a CSV's feature columns by name (what a checkpoint recorded); ``warn``: where
    the note about ignored columns goes (default: ``warnings.warn``). NaN or Inf in X or y is
    refused naming the file and where."""
    from gradstep.data.checks import check_finite

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: input file not found")
    if p.is_dir():
        from gradstep.data.mnist import load_mnist

        x, y, _ = load_mnist(p, download_missing=False)  # already scaled to [0, 1]
        return x, y
    name = p.name.lower()
    if name.endswith(".csv"):
        x_np, y_np = _csv_table(p, target, features, warn)  # checked for NaN / Inf, by column
    elif name.endswith((".npz", ".npy")):
        try:
            loaded = np.load(p, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                x_np, y_np = loaded, None
            else:
                with loaded as z:
                    if "X" not in z.files:
                        raise UserError(f"{p}: no array 'X' (arrays: {', '.join(z.files)})")
                    x_np, y_np = z["X"], (z["y"] if "y" in z.files else None)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # EOFError: 0 bytes
            if isinstance(err, UserError):
                raise
            why = "the file is empty" if isinstance(err, EOFError) else err
            raise UserError(f"{p}: cannot read as {p.suffix} (pickle is refused): {why}") from None
    elif "idx" in name or name.endswith("-ubyte.gz") or name.endswith("-ubyte"):
        x_np, y_np = _idx_pair(p)
    else:
        raise UserError(f"{p}: unknown input format (expected .csv, .npz, .npy or an IDX file)")
    if x_np.dtype.kind not in "biuf":
        raise UserError(f"{p}: X holds {x_np.dtype} values, expected numbers")
    x = torch.as_tensor(np.ascontiguousarray(x_np))
    y = None if y_np is None else torch.as_tensor(np.ascontiguousarray(y_np))
    check_finite(x, str(p), "X")
    if y is not None:
        check_finite(y, str(p), "y")
    return x, y


def _target(info: dict[str, Any]) -> str:
    target = (info.get("input") or {}).get("target", "target")
    return target if isinstance(target, str) else "target"


def _device(name: str) -> str:
    from gradstep.trainer import pick_device

    try:  # a missing cuda / mps is a clear error, not a traceback
        return str(pick_device(name))
    except UserError as err:
        raise UserError(str(err).replace("[run] device", "--device")) from None


def _dtype(x: torch.Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise UserError(f"{what}: cannot be made a tensor: {err}") from None
    if a.dtype.kind not in "biuf":
        raise UserError(f"{what}: holds {a.dtype.name} values, expected numbers")
    return torch.as_tensor(np.ascontiguousarray(a))


def _batch_shape(shape: tuple[int, ...]) -> str:
    """``(N, 1, 28, 28) (N samples of 1×28×28) or (N, 784) flat``: what the model takes."""
    text = f"(N, {', '.join(str(d) for d in shape)})"
    if len(shape) > 1:
        text += f" (N samples of {'×'.join(str(d) for d in shape)}) or (N, {math.prod(shape)}) flat"
    return text


def _fit_shape(
    x: torch.Tensor, shape: tuple[int, ...], what: str, say: Callable[[str], None]
) -> torch.Tensor:
    """``x`` as a batch of samples of ``shape``: as it is, flat rows reshaped, or one sample
    without a batch dimension made a batch of one (said in one line)."""
    if not shape or tuple(x.shape[1:]) == shape:
        return x
    size = math.prod(shape)
    if x.ndim <= len(shape) and x.numel() == size:
        say(
            f"{what}: one sample of shape {tuple(x.shape)}, without a batch dimension: "
            f"predicted as a batch of 1, shape {(1, *shape)}"
        )
        return x.reshape(1, *shape)
    if x.ndim >= 1 and math.prod(x.shape[1:]) == size:
        return x.reshape(len(x), *shape)
    raise UserError(
        f"{what}: input of shape {tuple(x.shape)} does not fit the model: it takes a batch of "
        f"shape {_batch_shape(shape)}, or one sample of shape {shape} without the batch dimension"
    )


def _range(spec: dict[str, Any]) -> tuple[float, float] | None:
    r = spec.get("range")
    if (
        isinstance(r, list)
        and len(r) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in r)
    ):
        return float(r[0]), float(r[1])
    return None


def _scale_warning(
    x: torch.Tensor, spec: dict[str, Any], shape: tuple[int, ...], what: str
) -> str | None:
    """A float image batch whose values are on another scale than training's: 0-255 where
    training saw [0, 1], or [0, 1] where it saw 0-255 (one ``aminmax``, images only)."""
    seen = _range(spec)
    if seen is None or x.numel() == 0 or not (spec.get("pixels") is True or len(shape) >= 2):
        return None
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))  # sync: once per call
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0:
        return None
    if seen[0] >= 0 and seen[1] <= 1.0 and hi > 2.0 and hi <= 255.0:
        return (
            f"{what}: float images in 0-255, but the model was trained on [0, 1]: divide "
            "them by 255 (uint8 images are scaled for you)"
        )
    if seen[0] >= 0 and seen[1] > 2.0 and hi <= 1.0:
        return (
            f"{what}: float images in [0, 1], but the model was trained on values up to "
            f"{seen[1]:g}: give them on the training scale (multiplied by 255 for 8-bit images)"
        )
    return None


def prepare_input(
    x: torch.Tensor | np.ndarray,
    info: dict[str, Any],
    what: str = "input",
    *,
    warn: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Raw input as the network takes it, exactly as training prepared its data, from a
    checkpoint's ``model.json`` record ``info``. The one place raw input is prepared: ``gradstep
    predict`` / ``eval`` and the predictor ``gs.load_model`` returns all call it.

    * **dtype**: uint8 is divided by ``uint8_divisor`` (255); other integer arrays (int64,
      int32, uint16, ...) too when training's input was 8-bit pixels (values must lie in
      0-255), and are otherwise refused with how to convert them; float64 becomes float32.
    * **shape**: samples of the training sample shape, or flat rows of its size, or one
      sample without a batch dimension (``(28, 28)``, ``(1, 28, 28)``, ``(784,)`` for a
      1×28×28 model), which becomes a batch of one, said through ``warn``.
    * **scale**: float images in 0-255 where training saw [0, 1], or the reverse: one warning.
    * **normalisation**: the training split's mean/std (or the constants the run was given).

    Args:
        x: a tensor or NumPy array (or a nested list), with or without the batch dimension.
        info: the checkpoint's ``model.json`` (``Checkpoint.model_info``).
        what: how messages name the input (a file name).
        warn: where the one-line notes go; default ``warnings.warn`` (an
            :class:`InputWarning`).

    Raises:
        UserError: no samples, a shape that does not fit (the expected batch shape spelled
            out), integer input the record gives no scale for.
    """
    say = _say(warn)
    x = _as_tensor(x, what)
    if x.numel() == 0:
        raise UserError(f"{what}: no samples")
    spec = info.get("input") or {}
    if not isinstance(spec, dict):
        raise UserError("the checkpoint's model.json: input is not an object")
    divisor = spec.get("uint8_divisor", 255)
    if not isinstance(divisor, int | float) or isinstance(divisor, bool) or not divisor > 0:
        raise UserError("the checkpoint's model.json: input.uint8_divisor is not a positive number")
    pixels = spec.get("pixels")
    if pixels is None:  # checkpoints written before "pixels" was recorded
        pixels = spec.get("source") == "mnist"
    was_float = x.is_floating_point()
    if x.dtype == torch.uint8:
        x = x.float() / float(divisor)
    elif x.dtype == torch.bool:
        x = x.float()
    elif not was_float:
        if x.is_complex():
            raise UserError(f"{what}: complex input ({_dtype(x)}); the model takes real numbers")
        if pixels is not True:
            raise UserError(
                f"{what}: integer input ({_dtype(x)}) for a model trained on float features: "
                "convert it as training's data was, e.g. x.astype('float32') (NumPy) or "
                "x.float() (torch), divided by 255 if they are 8-bit pixels the model saw in [0, 1]"
            )
        signed = (torch.int8, torch.int16, torch.int32, torch.int64)
        wide = x if x.dtype in signed else x.to(torch.float64)  # aminmax: no uint16/32/64
        lo, hi = (int(v) for v in torch.aminmax(wide))  # sync: once per call
        if lo < 0 or hi > 255:
            raise UserError(
                f"{what}: integer input ({_dtype(x)}) with values in [{lo}, {hi}], but the model "
                "was trained on 8-bit pixels (0-255): scale them to 0-255 (or pass floats on "
                "the training scale)"
            )
        x = x.float() / float(divisor)
    elif x.dtype == torch.float64:
        x = x.float()
    shape = tuple(spec.get("sample_shape") or ())
    x = _fit_shape(x, shape, what, say)
    if was_float:
        problem = _scale_warning(x, spec, shape, what)
        if problem is not None:
            say(problem)
    normalizer = normalizer_from_json(info.get("normalize"))
    return normalizer(x) if normalizer is not None else x


def _batches(x: torch.Tensor, batch_size: int, console: Console | None):
    chunks = x.split(batch_size)
    if console is None or not console.is_terminal or len(chunks) < 20:
        yield from chunks
        return
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("batches"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("predict", total=len(chunks))
        for chunk in chunks:
            yield chunk
            bar.advance(task)


def predict_tensor(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    console: Console | None = None,
) -> torch.Tensor:
    """Outputs of ``model`` for prepared input ``x`` (eval mode, inference_mode), on the CPU."""
    from gradstep.loop import predict_batches

    return predict_batches(model, (chunk.to(device) for chunk in _batches(x, batch_size, console)))


def predictions_table(out: torch.Tensor, task: str) -> tuple[list[str], list[list[Any]]]:
    """CSV columns: ``prediction`` and the class probabilities for a classifier."""
    if task == "multiclass":
        probs = torch.softmax(out.double(), dim=1)
        header = ["prediction", *[f"prob_{i}" for i in range(out.shape[1])]]
        preds = out.argmax(1).tolist()
        return header, [[c, *p] for c, p in zip(preds, probs.tolist(), strict=True)]
    if task == "binary":
        prob = torch.sigmoid(out.double()).reshape(len(out), -1)
        if prob.shape[1] == 1:
            return ["prediction", "prob_1"], [[int(p > 0.5), p] for p in prob[:, 0].tolist()]
        cols = [f"prediction_{i}" for i in range(prob.shape[1])]
        cols += [f"prob_{i}" for i in range(prob.shape[1])]
        return cols, [[*(int(v > 0.5) for v in r), *r] for r in prob.tolist()]
    flat = out.double().reshape(len(out), -1)
    if flat.shape[1] == 1:
        return ["prediction"], [[v] for v in flat[:, 0].tolist()]
    return [f"prediction_{i}" for i in range(flat.shape[1])], flat.tolist()


def predict_file(
    checkpoint: str | Path,
    input_path: str | Path,
    out_path: str | Path,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    console: Console | None = None,
    code_dir: str | Path | None = None,
    trust_code: bool = False,
    warn: Any = None,
) -> int:
    """Write predictions for ``input_path`` to ``out_path`` (CSV, atomically); return the count.
    ``code_dir`` / ``trust_code``: see :mod:`gradstep.trust`; ``warn``: where lines about
    skipped checkpoints go."""
    out = Path(out_path)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    device = _device(device)
    ckpt, model = load_for_inference(checkpoint, device, code_dir, trust_code, warn)
    info = ckpt.model_info
    x, _ = read_input(input_path, _target(info), features=_recorded_features(info), warn=_say(warn))
    x = prepare_input(x, info, str(input_path), warn=_say(warn))
    outputs = predict_tensor(model, x, batch_size=batch_size, device=device, console=console)
    header, rows = predictions_table(outputs, info.get("task", "multiclass"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(out, buf.getvalue())
    return len(rows)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    code_dir: str | Path | None = None,
    trust_code: bool = False,
    warn: Any = None,
    say: Any = None,
) -> dict[str, float]:
    """Loss and accuracy (or MAE) of a checkpoint on ``data`` (a file, as for predict, with
    labels), or by default on its run's validation data, rebuilt from the saved config.

    Without ``data``, ``say`` is told first which file the checkpoint's config makes it read
    (the checkpoint, not the user, named it: an error about it quotes none of its content)."""
    from gradstep.loop import evaluate_batches
    from gradstep.losses import build_loss

    device = _device(device)
    ckpt, model = load_for_inference(checkpoint, device, code_dir, trust_code, warn)
    info = ckpt.model_info
    task = info.get("task", "multiclass")
    if data is None:
        x, y = _run_validation_data(ckpt, say)
    else:
        raw_x, y = read_input(
            data, _target(info), features=_recorded_features(info), warn=_say(warn)
        )
        if y is None:
            raise UserError(f"{data}: no labels (a target column, array 'y' or an idx1 file)")
        x = prepare_input(raw_x, info, str(data), warn=_say(warn))
    if len(y) != len(x):
        raise UserError(f"{data}: {len(x)} samples but {len(y)} labels")
    if task == "multiclass":
        from gradstep.preflight import check_labels

        y = y.long()
        check_labels((x, y), int(info.get("outputs") or 2), f"{data or 'validation data'}")
    else:
        y = y.float().reshape(len(y), -1)
    loss_fn = build_loss(info.get("loss", "cross_entropy"))
    batches = zip(x.to(device).split(batch_size), y.to(device).split(batch_size), strict=True)
    return evaluate_batches(model, batches, loss_fn, task)


def _run_validation_data(ckpt: Checkpoint, say: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    from gradstep.config import validate_config
    from gradstep.data import prepare_data

    saved = ckpt.state() if ckpt.has("state.json") else {}
    if "config" not in saved:
        raise UserError(f"{ckpt.path}: no saved run config; pass --data FILE")
    try:
        cfg = validate_config(saved["config"], str(ckpt.path / "state.json"))
    except UserError as err:
        raise CheckpointError(f"{ckpt.path}: its saved run config is not valid: {err}") from None
    if cfg.data.source == "(python)":
        raise UserError(f"{ckpt.path}: the run trained on in-memory data; pass --data FILE")
    from gradstep.importing import is_import_spec

    if is_import_spec(cfg.data.source):  # rebuilding it would run code the checkpoint names
        raise UserError(
            f"{ckpt.path}: the run's data come from code ({cfg.data.source}); pass --data FILE"
        )
    base = saved.get("base_dir")
    base_dir = Path(base) if isinstance(base, str) and base else None
    where = _recorded_data(cfg, base_dir)
    if say is not None:
        say(f"evaluating on the run's validation data: {where} (as the checkpoint records it)")
    try:
        data = prepare_data(cfg, ckpt.model_info["task"], None, None, base_dir)
    except UserError as err:  # the checkpoint named the file: quote none of what it holds
        kind = "not found" if "not found" in str(err) else "not data of the run's kind"
        raise UserError(
            f"{ckpt.path}: the run's recorded data ({where}) cannot be read again ({kind}); "
            "pass --data FILE"
        ) from None
    if not isinstance(data.val, tuple):
        raise UserError(f"{ckpt.path}: the run had no in-memory validation data; pass --data FILE")
    if saved.get("fingerprint", {}).get("data") is not None:
        if saved["fingerprint"]["data"] not in _fingerprints(data.train):
            raise CheckpointError(
                f"{ckpt.path}: the run's data ({cfg.data.source}) have changed since training; "
                "pass --data FILE"
            )
    return data.val


def _fingerprints(train: Any) -> set[str]:
    """The fingerprints the run's training data may have been recorded with: the data as
    :func:`~gradstep.data.prepare_data` rebuilds them, and with 1-D targets as a column
    ``(N, 1)`` — the trainer reshapes them so for a model with one output (mse, l1,
    bce_with_logits) before it takes the fingerprint, and a rebuild knows no model."""
    from gradstep.checkpoint.resume import data_fingerprint

    found = {data_fingerprint(train)}
    if isinstance(train, tuple) and train[1].ndim == 1:
        found.add(data_fingerprint((train[0], train[1].unsqueeze(1))))
    return found


def _recorded_data(cfg: Any, base_dir: Path | None) -> str:
    """Which file (or built-in source) the saved config makes evaluation read."""
    if cfg.data.path is None:
        return f"the built-in source {cfg.data.source!r}"
    paths = [cfg.data.path] + ([cfg.data.val_path] if cfg.data.val_path else [])
    shown = []
    for text in paths:
        p = Path(text)
        if not p.is_absolute() and base_dir is not None and (base_dir / p).exists():
            p = base_dir / p
        shown.append(str(p))
    return " and ".join(shown)


__all__ = [
    "InputWarning",
    "evaluate_checkpoint",
    "predict_file",
    "predict_tensor",
    "prepare_input",
    "read_input",
]
