"""Use a checkpoint: read input files, prepare them as training did, predict, evaluate.

Input files (``gradstep predict`` / ``gradstep eval --data``):

* ``.csv`` — a header row; the run's target column (``[data] target``), when present, is the
  label and is left out of the features; every other column is a feature, in file order;
* ``.npz`` — array ``X`` (and ``y`` for eval), read without pickle; ``.npy`` — an ``X`` array;
* IDX — an images file (``*-idx3-ubyte`` or ``.gz``; labels from the matching ``idx1`` file beside
  it for eval), or a folder holding MNIST's files.

Preparation is exactly training's, from the checkpoint's ``model.json``: integer pixels are divided
by 255 (as the MNIST source does), flat rows are reshaped to the training sample shape when they
have its size, and the training split's normalisation (mean/std) is applied. Prediction runs in
eval mode under ``torch.inference_mode``, in batches, with a progress bar on a terminal.

Example::

    gradstep predict runs/mnist/checkpoints/best t10k-images-idx3-ubyte.gz --out preds.csv
"""

from __future__ import annotations

import csv
import io
import zipfile
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

    images = read_idx(path)
    label_name = path.name.replace("idx3", "idx1").replace("images", "labels")
    labels_path = path.with_name(label_name)
    labels = read_idx(labels_path) if label_name != path.name and labels_path.is_file() else None
    return images, labels


def _csv_table(path: Path, target: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read as CSV: {err}") from None
    if len(rows) < 2:
        raise UserError(f"{path}: expected a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    try:
        table = np.array([[float(c) for c in r] for r in rows[1:]], dtype=np.float64)
    except ValueError as err:
        raise UserError(f"{path}: a value is not a number ({err})") from None
    if table.shape[1] != len(header):
        raise UserError(f"{path}: rows do not have the header's {len(header)} fields")
    if target in header:
        t = header.index(target)
        return np.delete(table, t, axis=1), table[:, t]
    return table, None


def read_input(path: str | Path, target: str = "target") -> tuple[torch.Tensor, Any]:
    """``(X, y_or_None)`` from a csv / npz / npy / IDX file or an MNIST folder (raw, unprepared)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: input file not found")
    if p.is_dir():
        from gradstep.data.mnist import load_mnist

        x, y, _ = load_mnist(p, download_missing=False)  # already scaled to [0, 1]
        return x, y
    name = p.name.lower()
    if name.endswith(".csv"):
        x_np, y_np = _csv_table(p, target)
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
            why = "the file is empty" if isinstance(err, EOFError) else err
            raise UserError(f"{p}: cannot read as {p.suffix} (pickle is refused): {why}") from None
    elif "idx" in name or name.endswith("-ubyte.gz") or name.endswith("-ubyte"):
        x_np, y_np = _idx_pair(p)
    else:
        raise UserError(f"{p}: unknown input format (expected .csv, .npz, .npy or an IDX file)")
    y = None if y_np is None else torch.as_tensor(np.ascontiguousarray(y_np))
    return torch.as_tensor(np.ascontiguousarray(x_np)), y


def _device(name: str) -> str:
    from gradstep.trainer import pick_device

    try:  # a missing cuda / mps is a clear error, not a traceback
        return str(pick_device(name))
    except UserError as err:
        raise UserError(str(err).replace("[run] device", "--device")) from None


def prepare_input(x: torch.Tensor, info: dict[str, Any], what: str = "input") -> torch.Tensor:
    """Scale integer pixels, reshape to the training sample shape, normalise as training did."""
    if len(x) == 0 or x.ndim == 0:
        raise UserError(f"{what}: no samples")
    spec = info.get("input", {})
    if x.dtype == torch.uint8:
        x = x.float() / float(spec.get("uint8_divisor", 255))
    elif not x.is_floating_point() or x.dtype == torch.float64:
        x = x.float()
    shape = tuple(spec.get("sample_shape") or ())
    if shape and tuple(x.shape[1:]) != shape:
        size = int(np.prod(shape))
        if int(np.prod(x.shape[1:])) != size:
            raise UserError(
                f"{what}: samples of shape {tuple(x.shape[1:])}, the model was trained on {shape}"
            )
        x = x.reshape(len(x), *shape)
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
    x, _ = read_input(input_path, info.get("input", {}).get("target", "target"))
    x = prepare_input(x, info, str(input_path))
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
        raw_x, y = read_input(data, info.get("input", {}).get("target", "target"))
        if y is None:
            raise UserError(f"{data}: no labels (a target column, array 'y' or an idx1 file)")
        x = prepare_input(raw_x, info, str(data))
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
        from gradstep.checkpoint.resume import data_fingerprint

        if data_fingerprint(data.train) != saved["fingerprint"]["data"]:
            raise CheckpointError(
                f"{ckpt.path}: the run's data ({cfg.data.source}) have changed since training; "
                "pass --data FILE"
            )
    return data.val


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
    "evaluate_checkpoint",
    "predict_file",
    "predict_tensor",
    "prepare_input",
    "read_input",
]
