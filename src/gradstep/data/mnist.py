"""MNIST from its IDX files: find them, verify them, download them when missing.

Looks in ``path``, ``path/MNIST/raw`` (torchvision's layout) and ``path/raw``, for gzip'd or plain
files. Gzip'd files are checked against the published md5 sums; plain files are checked by their
IDX header and size. The 60,000-image training split is used when present; otherwise the
10,000-image test split (the one ``../shared/data/mnist`` holds), which the caller then splits
into train and validation. When neither is there and ``download`` is on, the files are fetched
from the usual mirrors into ``path``, each verified before it is renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from gradstep.data.idx import read_idx
from gradstep.errors import UserError

MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SPLITS = {"train": "train", "test": "t10k"}


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _verified(path: Path) -> Path:
    expected = MD5.get(path.name)
    if expected is not None and md5sum(path) != expected:
        raise UserError(f"{path}: md5 mismatch (corrupt or not the official MNIST file)")
    return path


def find_split(root: Path, split: str) -> tuple[Path, Path] | None:
    """Paths of the (images, labels) files of ``split`` ("train" or "test"), or None."""
    prefix = SPLITS[split]
    images = _find(root, f"{prefix}-images-idx3-ubyte")
    labels = _find(root, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    return _verified(images), _verified(labels)


def download(
    root: Path, split: str, mirrors: list[str] | None = None, timeout: float = 30.0
) -> None:
    """Fetch one split's two gzip'd files into ``root``, md5-checked, trying each mirror in turn.

    A failed download leaves nothing behind: not a partial file, not the folders it made."""
    made = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    try:
        _download_split(root, split, mirrors, timeout)
    except BaseException:
        for folder in made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _download_split(root: Path, split: str, mirrors: list[str] | None, timeout: float) -> None:
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{SPLITS[split]}-{kind}-ubyte.gz"
        errors = []
        for mirror in mirrors if mirrors is not None else MIRRORS:
            url = mirror + name
            print(f"Downloading {url}", file=sys.stderr)
            try:
                _fetch(url, root / name, MD5[name], timeout)
                break
            except (urllib.error.URLError, OSError, ValueError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
        else:
            raise UserError(
                f"MNIST not found in {root} and the download failed (offline?): "
                + "; ".join(errors)
                + f". Put the IDX files in {root} or set [data] path"
            )


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != md5:
            raise ValueError(f"md5 mismatch ({h.hexdigest()})")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_idx_file(path: Path) -> bool:
    """Whether ``path``'s name is an IDX file's (``train-images-idx3-ubyte.gz``, ``x.idx``)."""
    name = path.name.lower()
    return "-idx" in name or name.endswith((".idx", "-ubyte", "-ubyte.gz"))


def labels_beside(images: Path) -> Path | None:
    """The labels file that goes with an IDX images file (``idx3`` -> ``idx1``, ``images`` ->
    ``labels``), or None if the name has neither."""
    name = images.name.replace("idx3", "idx1").replace("images", "labels")
    return images.with_name(name) if name != images.name else None


def load_idx_pair(images: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One IDX images file and its labels file beside it, as :func:`load_mnist` returns them:
    float32 ``(N, 1, H, W)`` in [0, 1] and int64 labels."""
    labels = labels_beside(images)
    if labels is None or not labels.is_file():
        expected = f" ({labels.name})" if labels is not None else ""
        raise UserError(
            f"{images}: no labels file beside it{expected}; name the images file "
            "(…-images-idx3-ubyte) with its labels file (…-labels-idx1-ubyte) in the same folder"
        )
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise UserError(
            f"{images}: expected N×H×W images and N labels in {labels.name}, "
            f"got {x.shape} and {y.shape}"
        )
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(
        y.astype(np.int64)
    )


def load_mnist(
    root: Path, download_missing: bool = True, mirrors: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Return ``(images, labels, split)``: images float32 (N, 1, 28, 28) in [0, 1], labels int64."""
    files = find_split(root, "train") or find_split(root, "test")
    if files is None:
        if not download_missing:
            raise UserError(f"MNIST not found in {root} and [data] download = false")
        download(root, "train", mirrors)
        files = find_split(root, "train")
        assert files is not None
    split = "train" if files[0].name.startswith("train") else "test"
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(
            f"{files[0]}: expected N×28×28 images and N labels, "
            f"got {images.shape} and {labels.shape}"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64)), split
