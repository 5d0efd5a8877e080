"""The ``[data] source`` values: built-in generators, MNIST, files, and user functions.

Each source returns training data and, when the source has a separate validation file
(``val_path``), validation data; otherwise the caller splits off ``val_split``.

=================  ===========================================================================
source             what it gives
=================  ===========================================================================
``random``         ``randn(n, features)`` features, ``randint(classes)`` labels (the tutorials')
``circles``        scikit-learn ``make_circles(n, noise, factor)``
``moons``          scikit-learn ``make_moons(n, noise)``
``digits``         scikit-learn's 1,797 8×8 digits as (N, 1, 8, 8) images in [0, 1]
``mnist``          IDX files in ``path`` (see :mod:`gradstep.data.mnist`), (N, 1, 28, 28)
``csv``            a header row; ``target`` names the label column, the rest are features
``npz``            arrays ``X`` and ``y`` (loaded without pickle)
``file.py:fn``     ``fn()`` returns ``(X, y)``, a Dataset, or a ``(train, val)`` pair of them
=================  ===========================================================================

A file that is not what its source expects (empty, truncated, not UTF-8, a ``.npy`` named
``.npz``, pickled) is a :class:`~gradstep.errors.UserError` naming the file; so is ``n`` too
large to allocate, and a ``file.py:fn`` that cannot be called without arguments or returns
something that is not data. An error raised *inside* a user's data function is a bug in it and
keeps its traceback.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gradstep.config import DataSection
from gradstep.data.convert import DataLike, to_data
from gradstep.data.mnist import load_mnist
from gradstep.errors import UserError, first_line
from gradstep.importing import is_import_spec, load_object

BUILTIN = ("digits", "random", "circles", "moons", "mnist", "csv", "npz")
_FILE_SOURCES = ("mnist", "csv", "npz")


def load_source(
    cfg: DataSection, seed: int, base_dir: Path | None = None
) -> tuple[DataLike, DataLike | None, str]:
    """Return ``(train, val_or_None, description)`` for ``[data] source``."""
    source = cfg.source
    if cfg.val_path is not None and source not in _FILE_SOURCES:
        raise UserError(f"[data] val_path is for the mnist, csv and npz sources, not {source!r}")
    if source == "random":
        x, y = _generate(cfg, lambda: _random(cfg, seed))
        return (
            (x, y),
            None,
            f"random: {cfg.n} samples, {cfg.features} features, {cfg.classes} classes",
        )
    if source in ("circles", "moons"):
        from sklearn import datasets

        if source == "circles":
            x, y = _generate(
                cfg,
                lambda: datasets.make_circles(
                    cfg.n, noise=cfg.noise, factor=cfg.factor, random_state=seed
                ),
            )
        else:
            x, y = _generate(
                cfg, lambda: datasets.make_moons(cfg.n, noise=cfg.noise, random_state=seed)
            )
        return to_data((x, y), source), None, f"{source}: {cfg.n} samples, noise {cfg.noise}"
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
        return (x, torch.from_numpy(d.target.astype(np.int64))), None, "digits: 1797 8×8 images"
    if source in _FILE_SOURCES:
        loader = {"mnist": _mnist, "csv": _csv, "npz": _npz}[source]
        train, desc = loader(cfg, _resolve(cfg.path, source, base_dir, "path"))
        val = None
        if cfg.val_path is not None:
            val, _ = loader(cfg, _resolve(cfg.val_path, source, base_dir, "val_path"))
        return train, val, desc
    if is_import_spec(source):
        return _from_function(source, base_dir)
    raise UserError(
        f"[data] source = {source!r}: expected one of {', '.join(BUILTIN)} or 'file.py:function'"
    )


def _random(cfg: DataSection, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.n, cfg.features, generator=g)
    return x, torch.randint(0, cfg.classes, (cfg.n,), generator=g)


def _generate(cfg: DataSection, make: Callable[[], Any]) -> Any:
    """Run a generated source's ``make``, turning a failed allocation into a UserError.

    The config bounds ``n`` and ``n × features``; this is for a machine with less memory than
    those bounds assume (torch raises ``RuntimeError: ... can't allocate memory``, NumPy
    ``MemoryError``)."""
    try:
        return make()
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise
        raise UserError(
            f"[data] n = {cfg.n}: cannot allocate the {cfg.source} data: {first_line(err)}"
        ) from None


def _resolve(path: str | None, source: str, base_dir: Path | None, key: str) -> Path:
    if path is None:
        if source == "mnist" and key == "path":
            path = "data/mnist"
        else:
            raise UserError(f"[data] {key} is required for source = {source!r}")
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None and (base_dir / p).exists():
        p = base_dir / p
    if source != "mnist" and not p.exists():
        raise UserError(f"[data] {key} = {path!r}: file not found")
    return p


def _mnist(cfg: DataSection, root: Path) -> tuple[DataLike, str]:
    x, y, split = load_mnist(root, download_missing=cfg.download)
    note = "" if split == "train" else " (the official test split; no training files found)"
    return (x, y), f"mnist: {len(x)} images from {root}{note}"


def _labels(values: np.ndarray) -> np.ndarray:
    """Integer labels stay integers (class ids); anything else is a float target."""
    if (
        np.issubdtype(values.dtype, np.floating)
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    ):
        return values.astype(np.int64)
    return values


def _csv(cfg: DataSection, path: Path) -> tuple[DataLike, str]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:  # csv.Error: a NUL byte, ...
        raise UserError(f"{path}: cannot read as CSV: {first_line(err)}") from None
    if not rows:
        raise UserError(f"{path}: empty CSV file (expected a header row)")
    header = [h.strip() for h in rows[0]]
    if cfg.target not in header:
        from gradstep.errors import did_you_mean

        raise UserError(
            f"{path}: no column [data] target = {cfg.target!r}{did_you_mean(cfg.target, header)}; "
            f"columns: {', '.join(header)}"
        )
    t = header.index(cfg.target)
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise UserError(f"{path}: the dataset is empty (a header but no rows)")
    table = np.empty((len(body), len(header)), dtype=np.float64)
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise UserError(f"{path}:{i + 2}: {len(row)} fields, the header has {len(header)}")
        for j, cell in enumerate(row):
            try:
                table[i, j] = float(cell)
            except ValueError:
                raise UserError(
                    f"{path}:{i + 2}: column {header[j]!r}: {cell!r} is not a number"
                ) from None
    x = np.delete(table, t, axis=1)
    return to_data((x, _labels(table[:, t])), str(path)), f"csv: {len(body)} rows from {path}"


def _npz(cfg: DataSection, path: Path) -> tuple[DataLike, str]:
    """Arrays ``X`` and ``y`` of an ``.npz`` file. np.load reads a 0-byte file as EOFError, a
    ``.npy`` as one array (not an archive), text as pickled data (refused)."""
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: cannot read as .npz: the file is empty (0 bytes)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: cannot read as .npz: it holds one array (a .npy file)")
        with loaded as z:
            missing = [k for k in ("X", "y") if k not in z.files]
            if missing:
                raise UserError(f"{path}: no array {missing[0]!r} (arrays: {', '.join(z.files)})")
            x, y = z["X"], z["y"]
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"{path}: cannot read as .npz: {first_line(err)}") from None
    return to_data((x, _labels(y) if y.dtype.kind == "f" else y), str(path)), (
        f"npz: {len(x)} samples from {path}"
    )


def _from_function(spec: str, base_dir: Path | None) -> tuple[DataLike, DataLike | None, str]:
    """Call a user's data function, ``file.py:fn`` or ``package.module:fn``.

    Calling it with no arguments failing at the call itself (``os:system``: a missing
    argument) is a user error: it is not a data function. A TypeError raised inside it is a
    bug in its code and propagates with its traceback. What it returns must be data: ``(X,
    y)``, a Dataset, a DataLoader, ``(train, val)`` of those, or ``{"train": ..., "val": ...}``.
    """
    fn = load_object(spec, base_dir, "[data] source")
    what = f"[data] source = {spec!r}"
    if not callable(fn):
        raise UserError(f"{what} is not a function")
    try:
        out: Any = fn()
    except TypeError as err:
        if err.__traceback__ is not None and err.__traceback__.tb_next is not None:
            raise  # raised inside the function (it has a frame of its own): its bug
        raise UserError(
            f"{what} cannot be called without arguments ({first_line(err)}); expected a "
            "function that takes none and returns training data"
        ) from None
    if not isinstance(out, tuple | list | dict | Dataset | DataLoader):
        raise UserError(
            f"{what} did not return training data: it returned {type(out).__name__}; expected "
            "(X, y) arrays or tensors, a Dataset, a DataLoader, or a (train, val) pair of them"
        )
    if isinstance(out, dict) and "train" in out:
        val = out.get("val")
        return to_data(out["train"], what), (None if val is None else to_data(val, what)), spec
    if isinstance(out, tuple | list) and len(out) == 2:
        a, b = out
        if _is_dataset(a) and _is_dataset(b):
            return to_data(a, f"{what} (train)"), to_data(b, f"{what} (val)"), spec
    return to_data(out, what), None, spec


def _is_dataset(v: Any) -> bool:
    """A Dataset, a DataLoader or an ``(X, y)`` pair of arrays: one half of ``(train, val)``."""
    if isinstance(v, Dataset | DataLoader):
        return True
    arrays = torch.Tensor | np.ndarray
    return isinstance(v, tuple | list) and len(v) == 2 and all(isinstance(e, arrays) for e in v)
