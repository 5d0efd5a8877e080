"""The ``[data] source`` values: built-in generators, MNIST, files, and user functions.

Each source returns training data and, when the source has a separate validation file
(``val_path``), validation data; otherwise the caller splits off ``val_split``.

=================  ===========================================================================
source             what it gives
=================  ===========================================================================
``random``         ``randn(n, n_features)`` features, ``randint(classes)`` labels (the tutorials')
``circles``        scikit-learn ``make_circles(n, noise, factor)``
``moons``          scikit-learn ``make_moons(n, noise)``
``digits``         scikit-learn's 1,797 8×8 digits as (N, 1, 8, 8) images in [0, 1]
``mnist``          IDX files in the folder ``path`` (see :mod:`gradstep.data.mnist`), or ``path``
                   an IDX images file with its labels file beside it; (N, 1, 28, 28) in [0, 1]
``csv``            a header row; ``target`` names the label column, ``features`` (or all but
                   ``drop``) the features, by name (see :mod:`gradstep.data.table`)
``npz``            arrays ``X`` and ``y`` (loaded without pickle)
``file.py:fn``     ``fn()`` returns ``(X, y)``, a Dataset, or a ``(train, val)`` pair of them
=================  ===========================================================================

A file that is not what its source expects (empty, truncated, not UTF-8, a ``.npy`` named
``.npz``, pickled) is a :class:`~gradstep.errors.UserError` naming the file; so is ``n`` too
large to allocate, and a ``file.py:fn`` that cannot be called without arguments or returns
something that is not data. An error raised *inside* a user's data function is a bug in it and
keeps its traceback.

:func:`load` also says what the checkpoint must record about the input: the CSV feature columns'
names, and whether the samples were 8-bit pixels scaled by 1/255 (MNIST).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gradstep.config import DataSection
from gradstep.data.convert import DataLike, is_pixels, to_data
from gradstep.data.mnist import is_idx_file, load_idx_pair, load_mnist
from gradstep.data.table import read_csv
from gradstep.errors import UserError, first_line
from gradstep.importing import is_import_spec, load_object

BUILTIN = ("digits", "random", "circles", "moons", "mnist", "csv", "npz")
_FILE_SOURCES = ("mnist", "csv", "npz")


@dataclass
class Loaded:
    """What a source gave: data, a description, and facts about the input to record."""

    train: DataLike
    val: DataLike | None
    description: str
    features: list[str] | None = None  # CSV feature columns, in order
    pixels: bool = False  # 8-bit pixels, divided by 255 (MNIST; uint8 X of an npz or function)


def load_source(
    cfg: DataSection, seed: int, base_dir: Path | None = None
) -> tuple[DataLike, DataLike | None, str]:
    """Return ``(train, val_or_None, description)`` for ``[data] source``."""
    loaded = load(cfg, seed, base_dir)
    return loaded.train, loaded.val, loaded.description


def load(cfg: DataSection, seed: int, base_dir: Path | None = None) -> Loaded:
    """Load ``[data] source`` (see the module docstring)."""
    source = cfg.source
    if cfg.val_path is not None and source not in _FILE_SOURCES:
        raise UserError(f"[data] val_path is for the mnist, csv and npz sources, not {source!r}")
    if source == "random":
        x, y = _generate(cfg, lambda: _random(cfg, seed))
        return Loaded(
            (x, y),
            None,
            f"random: {cfg.n} samples, {cfg.n_features} features, {cfg.classes} classes",
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
        desc = f"{source}: {cfg.n} samples, noise {cfg.noise}"
        return Loaded(to_data((x, y), source), None, desc)
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
        y = torch.from_numpy(d.target.astype(np.int64))
        return Loaded((x, y), None, "digits: 1797 8×8 images")
    if source in _FILE_SOURCES:
        loader = {"mnist": _mnist, "csv": _csv, "npz": _npz}[source]
        train, desc, names, pixels = loader(cfg, _resolve(cfg.path, source, base_dir, "path"))
        val = None
        if cfg.val_path is not None:
            # the training file's feature columns, picked by name from the validation file
            val_path = _resolve(cfg.val_path, source, base_dir, "val_path")
            val = (loader(cfg, val_path, names) if names else loader(cfg, val_path))[0]
        return Loaded(train, val, desc, names, pixels=pixels)
    if is_import_spec(source):
        train, val, desc, pixels = _from_function(source, base_dir)
        return Loaded(train, val, desc, pixels=pixels)
    raise UserError(
        f"[data] source = {source!r}: expected one of {', '.join(BUILTIN)} or 'file.py:function'"
    )


def _random(cfg: DataSection, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.n, cfg.n_features, generator=g)
    return x, torch.randint(0, cfg.classes, (cfg.n,), generator=g)


def _generate(cfg: DataSection, make: Callable[[], Any]) -> Any:
    """Run a generated source's ``make``, turning a failed allocation into a UserError.

    The config bounds ``n`` and ``n × n_features``; this is for a machine with less memory than
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
    # an MNIST folder may be missing (it is downloaded into); an IDX file may not
    if (source != "mnist" or is_idx_file(p)) and not p.exists():
        raise UserError(f"[data] {key} = {path!r}: file not found")
    return p


def _mnist(cfg: DataSection, root: Path) -> tuple[DataLike, str, None, bool]:
    """The images (8-bit pixels divided by 255: ``True``) and labels, and a description."""
    if root.is_file():
        x, y = load_idx_pair(root)
        return (x, y), f"mnist: {len(x)} images from {root}", None, True
    x, y, split = load_mnist(root, download_missing=cfg.download)
    note = "" if split == "train" else " (the official test split; no training files found)"
    return (x, y), f"mnist: {len(x)} images from {root}{note}", None, True


def _labels(values: np.ndarray) -> np.ndarray:
    """Integer labels stay integers (class ids); anything else is a float target."""
    if (
        np.issubdtype(values.dtype, np.floating)
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    ):
        return values.astype(np.int64)
    return values


def _csv(
    cfg: DataSection, path: Path, features: list[str] | None = None
) -> tuple[DataLike, str, list[str], bool]:
    """``features``: the columns to take (the training file's, for ``val_path``)."""
    if features is not None:
        table = read_csv(
            path,
            target=cfg.target,
            need_target=True,
            features=features,
            why="a column of the training file",
        )
    else:
        table = read_csv(
            path, target=cfg.target, need_target=True, features=cfg.features, drop=cfg.drop
        )
    assert table.y is not None
    data = to_data((table.x, _labels(table.y)), str(path))
    chosen = f", {len(table.features)} feature columns" if cfg.features or cfg.drop else ""
    return data, f"csv: {len(table.x)} rows{chosen} from {path}", table.features, False


def _npz(cfg: DataSection, path: Path) -> tuple[DataLike, str, None, bool]:
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
    data = to_data((x, _labels(y) if y.dtype.kind == "f" else y), str(path))
    # uint8 X: 8-bit pixels, which to_data divided by 255 — recorded so
    return data, f"npz: {len(x)} samples from {path}", None, is_pixels(x)


def _uint8_x(obj: Any) -> bool:
    """Whether ``obj`` is an ``(X, y)`` pair whose X is 8-bit pixels."""
    return isinstance(obj, tuple | list) and len(obj) == 2 and is_pixels(obj[0])


def _from_function(spec: str, base_dir: Path | None) -> tuple[DataLike, DataLike | None, str, bool]:
    """Call a user's data function, ``file.py:fn`` or ``package.module:fn``.

    Calling it with no arguments failing at the call itself (``os:system``: a missing
    argument) is a user error: it is not a data function. A TypeError raised inside it is a
    bug in its code and propagates with its traceback. What it returns must be data: ``(X,
    y)``, a Dataset, a DataLoader, ``(train, val)`` of those, or ``{"train": ..., "val": ...}``.
    Returns the training and validation data, a description, and whether the training X was
    uint8 (8-bit pixels, divided by 255).
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
        train = to_data(out["train"], what)
        return train, (None if val is None else to_data(val, what)), spec, _uint8_x(out["train"])
    if isinstance(out, tuple | list) and len(out) == 2:
        a, b = out
        if _is_dataset(a) and _is_dataset(b):
            return to_data(a, f"{what} (train)"), to_data(b, f"{what} (val)"), spec, _uint8_x(a)
    return to_data(out, what), None, spec, _uint8_x(out)


def _is_dataset(v: Any) -> bool:
    """A Dataset, a DataLoader or an ``(X, y)`` pair of arrays: one half of ``(train, val)``."""
    if isinstance(v, Dataset | DataLoader):
        return True
    arrays = torch.Tensor | np.ndarray
    return isinstance(v, tuple | list) and len(v) == 2 and all(isinstance(e, arrays) for e in v)
