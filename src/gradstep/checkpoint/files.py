"""A checkpoint on disk: an atomic directory of safetensors + JSON files with a SHA-256 manifest.

Writing (:func:`write_checkpoint_dir`): every file goes into a temporary sibling directory
(``.tmp-step-000123-<random>``, or a pruned checkpoint's, recycled), ``manifest.json`` last; the
directory is renamed to its final name and everything is made durable — on Linux by one
``syncfs`` of the filesystem after the rename; elsewhere by an fsync of each file and of the
directory before it, and of the parent after — before ``latest`` / ``best`` move and old
checkpoints are pruned. A crash at any point leaves the previous checkpoints intact, and of the
new one either the complete checkpoint, a ``.tmp-*`` directory that is never listed (and that
:func:`remove_stale_tmp` removes), or a directory that :func:`verify` refuses (files that do not
match the manifest, no manifest, or the recycled directory's old manifest naming another step).

Reading (:func:`verify` and :func:`read_tensors`): a checkpoint is loaded only when its manifest
verifies — every file listed is there with the size and SHA-256 recorded, and nothing is missing —
and its safetensors files parse (header, dtypes, offsets inside the file) and hold only finite
values. Nothing here unpickles or executes anything: safetensors and JSON are plain data.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from gradstep.errors import UserError

FORMAT = "gradstep-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
STEP_DIR = re.compile(r"^step-(\d+)$")  # a checkpoint's directory: step-000123
_CHUNK = 1 << 20

# Extensions and leading bytes of files that PyTorch (or Python) would unpickle.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar")
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # a raw pickle; torch.save's zip archive


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, corrupt, not a gradstep checkpoint, unsafe."""


class SaveError(RuntimeError):
    """Writing a checkpoint failed (disk full, permission denied, ...); names the path."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)  # hashlib releases the GIL on large buffers
    return h.hexdigest()


_READ = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def open_plain(path: Path) -> int:
    """A read-only descriptor of ``path``, which must be a plain file of the checkpoint itself:
    a symlink (``state.json`` -> ``/etc/passwd``, or into another run) is never followed, and a
    FIFO or device never opened for reading. :class:`CheckpointError` otherwise."""
    try:
        fd = os.open(path, _READ)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: a symlink; a checkpoint's files are its own") from None
        if err.errno == errno.ENOENT:
            raise CheckpointError(f"{path}: missing") from None
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: not a plain file")
    return fd


def read_plain(path: Path) -> bytes:
    """The bytes of the plain file ``path`` (see :func:`open_plain`)."""
    fd = open_plain(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)


def _sha256_plain(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of the plain file ``path``, read through one no-follow descriptor."""
    fd = open_plain(path)
    h = hashlib.sha256()
    try:
        size = os.fstat(fd).st_size
        with os.fdopen(fd, "rb", closefd=False) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)  # hashlib releases the GIL on large buffers
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    return size, h.hexdigest()


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)``: flush one filesystem, every file and directory on it, at once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


# One syncfs flushes a checkpoint's files and folder with one device flush where fsync-ing each
# of them takes seven; on a shared machine those flushes are what slows training down most.
_SYNCFS = _load_syncfs()


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere move
    ``b`` aside first, so that a crash in between leaves it as ``b.replaced-*`` (not lost)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if sys.platform.startswith("linux") and fn is not None:
        at_fdcwd, rename_exchange = -100, 2
        if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    aside = b.with_name(f"{b.name}.replaced-{secrets.token_hex(4)}")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _flush_dir(path: Path) -> None:
    """Make ``path`` and, with syncfs, every file written into it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS is None:
            os.fsync(fd)
        elif _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


# O_NONBLOCK: opening a FIFO left in a recycled directory fails (ENXIO) instead of hanging
_OPEN = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_NONBLOCK
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)
# what opening an entry for overwriting may meet: a symlink (O_NOFOLLOW), a directory, a
# read-only file (unless root), a FIFO with no reader
_REPLACE = (errno.ELOOP, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENXIO)


def _write_file(path: str, data: bytes | bytearray) -> None:
    """Write ``data``; without syncfs, fsync it here (with it, :func:`_flush_dir` does).
    Plain ``os`` calls: no buffered-file object, no extra copy, few syscalls. An existing file
    (a recycled directory's) is overwritten in place and then cut to length, which reuses its
    disk blocks and cached pages instead of freeing them and allocating new ones — unless it is
    not a plain, writable file of its own: one with another hard link (a backup made with
    ``cp -al``), a symlink (into data outside the run), a read-only file, a directory or a FIFO
    is removed and a new file is written instead, never written through."""
    fd, size = _open_own(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if size > len(data):
            os.ftruncate(fd, len(data))
        if _SYNCFS is None:
            os.fsync(fd)
    finally:
        os.close(fd)


def _open_own(path: str) -> tuple[int, int]:
    """``(fd, size)`` of ``path`` opened for writing: the existing file if it is a plain,
    writable file with no other link, else a new one in its place (see :func:`_write_file`)."""
    try:
        fd = os.open(path, _OPEN, 0o644)
    except OSError as err:
        if err.errno not in _REPLACE:
            raise
    else:
        st = os.fstat(fd)
        if st.st_nlink == 1 and stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IWUSR:
            return fd, st.st_size
        os.close(fd)
    remove_path(path)
    return os.open(path, _OPEN | os.O_EXCL, 0o644), 0


def remove_path(path: str) -> None:
    """Remove a file, link or directory tree; one that is already gone is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


_PLAIN_NAME = re.compile(r"[\w.-]+", re.ASCII)


SELF_CHECK = "manifest_sha256"  # the manifest's last key: SHA-256 of every byte before it
_SELF_CHECK_AT = f'"{SELF_CHECK}": "'.encode()


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as JSON: its top-level values on the first line, then a line per file,
    readable with ``cat``, and last ``"manifest_sha256"``: the SHA-256 of every byte before
    that key, so a manifest that is torn (a power loss in the middle of rewriting it in place:
    sectors of two versions), cut or changed is refused by :func:`read_manifest` on any
    filesystem. One call of the C encoder, and the file lines formatted directly (a name that
    is not plain goes through the encoder): on the writer thread every Python-level operation
    holds the GIL the training thread wants (an indented ``json.dumps`` runs in pure
    Python)."""
    head = json.dumps({k: v for k, v in manifest.items() if k not in ("files", SELF_CHECK)})
    lines = []
    for name, entry in manifest.get("files", {}).items():
        key = f'"{name}"' if _PLAIN_NAME.fullmatch(name) else json.dumps(name)
        lines.append(f'  {key}: {{"bytes": {int(entry["bytes"])}, "sha256": "{entry["sha256"]}"}}')
    body = ",\n".join(lines)
    text = f'{head[:-1]},\n"files": {{\n{body}\n}},\n'.encode()
    return text + _SELF_CHECK_AT + hashlib.sha256(text).hexdigest().encode() + b'"}\n'


def json_bytes(obj: Any, indent: int | None = None) -> bytes:
    """JSON as bytes. NaN and infinities (a diverged loss in the history) are written as Python's
    ``json`` writes and reads them back, so the state round-trips exactly. Without ``indent``
    the C encoder runs (an indented dump is pure Python, ten times slower)."""
    return (json.dumps(obj, indent=indent) + "\n").encode()


# A hook the kill tests use to die in the middle of a write; None in normal use.
_after_file_hook: Callable[[Path], None] | None = None


def write_checkpoint_dir(
    final: Path,
    files: Mapping[str, bytes | bytearray],
    meta: dict[str, Any],
    reuse: Path | None = None,
) -> Path:
    """Atomically create directory ``final`` holding ``files`` plus a manifest of their hashes.

    ``reuse``: a pruned checkpoint's directory, already renamed to a ``.tmp-*`` name (see
    :class:`~gradstep.checkpoint.writer.CheckpointWriter`), to write into instead of a new
    one: any entry the new checkpoint does not write is removed first, then its files are
    overwritten in place (see :func:`_write_file`), the manifest last. Every state a crash can
    leave is refused: the rename not durable — a ``.tmp-*`` directory, never listed; files only
    partly rewritten — a manifest that does not match them; the manifest torn (sectors of the
    old and the new one) or cut — it does not match its own checksum (see
    :func:`manifest_bytes`); the manifest not rewritten at all while the rename is durable —
    the old one names another step than the directory's name, which :func:`verify` refuses.

    Raises :class:`SaveError` (naming the path) for any OS error; ``final`` then does not exist
    and no temporary directory is left behind.
    """
    parent = final.parent
    tmp = reuse or parent / f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}"
    folder = os.fspath(tmp)
    try:
        if reuse is None:
            parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        else:
            for name in os.listdir(folder):  # what the new checkpoint does not write again
                if name not in files and name != MANIFEST:
                    remove_path(os.path.join(folder, name))
        manifest: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, **meta}
        entries = {}
        for name, data in files.items():
            path = os.path.join(folder, name)
            _write_file(path, data)
            entries[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            if _after_file_hook is not None:
                _after_file_hook(Path(path))
        manifest["files"] = entries
        _write_file(os.path.join(folder, MANIFEST), manifest_bytes(manifest))
        if _SYNCFS is None:
            _flush_dir(tmp)  # every file durable before the directory gets its final name
        try:
            os.rename(folder, final)
        except OSError as err:  # the same step saved again (fit end, a resumed finished run)
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            _exchange(tmp, final)  # atomically: the old one stays until the new one is in place
            with contextlib.suppress(OSError):  # the new one is in place: a leftover is harmless
                remove_path(folder)  # the old one: a directory, or a link or file (never followed)
        # Durable before links move and old checkpoints are pruned. With syncfs, one flush
        # covers the files and the rename: a crash before it may leave a renamed directory with
        # torn files, which its manifest rejects, and the previous checkpoints are still there.
        _flush_dir(parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        where = err.filename or tmp
        raise SaveError(f"cannot save checkpoint {final}: {err.strerror or err} ({where})") from err
    return final


def remove_stale_tmp(parent: Path) -> None:
    """Remove ``.tmp-*`` directories left by a write that was killed."""
    if parent.is_dir():
        for p in parent.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)


def looks_like_pickle(path: Path) -> bool:
    """A ``.pt`` / ``.pth`` / ``.pkl`` ... file, or one that starts like a pickle or a zip."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return any(head.startswith(m) for m in _PICKLE_MAGIC)


def refuse_non_checkpoint(path: Path) -> None:
    """Raise a clear :class:`CheckpointError` for a path that is not a checkpoint directory."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if path.is_file() and looks_like_pickle(path):
        raise CheckpointError(
            f"{path}: a pickle file (torch.save); gradstep never unpickles, since unpickling can "
            "run arbitrary code. If you trust it and it holds a plain state_dict, convert it: "
            f"gradstep convert {path} --model NAME [--set model.args.KEY=VALUE] --out DIR"
        )
    if path.is_file():
        raise CheckpointError(
            f"{path}: a file, not a gradstep checkpoint (a directory with {MANIFEST})"
        )
    raise CheckpointError(f"{path}: not a gradstep checkpoint (no {MANIFEST})")


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` of the checkpoint at ``path``, refused (:class:`CheckpointError`)
    unless it parses, is gradstep's, of a version this reads, lists files, and — when it
    carries one (all but the earliest do) — matches its own SHA-256."""
    if not os.path.lexists(path / MANIFEST):
        refuse_non_checkpoint(path)
    raw = read_plain(path / MANIFEST)
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as err:  # RecursionError: brackets nested too deep
        raise CheckpointError(f"{path / MANIFEST}: unreadable manifest: {_why(err)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path / MANIFEST}: not a gradstep checkpoint manifest")
    if SELF_CHECK in manifest:
        at = raw.rfind(_SELF_CHECK_AT)
        if at < 0 or hashlib.sha256(raw[:at]).hexdigest() != manifest[SELF_CHECK]:
            raise CheckpointError(
                f"{path / MANIFEST}: does not match its own SHA-256 (torn or changed)"
            )
    version = manifest.get("version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path / MANIFEST}: version {version!r} is not a number")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this "
            f"gradstep reads ({FORMAT_VERSION}); upgrade gradstep"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
        raise CheckpointError(f"{path / MANIFEST}: no valid file list")
    step = manifest.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path / MANIFEST}: step {step!r} is not a count of steps")
    return manifest


def _why(err: BaseException) -> str:
    """One line about a parse error (a RecursionError's text says nothing useful)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def verify(path: Path) -> dict[str, Any]:
    """Check every file against the manifest (size and SHA-256); return the manifest.

    Raises :class:`CheckpointError` naming the first file that is missing, truncated or changed,
    or, for a ``step-N`` directory (or a link to one), a manifest that is another step's: a
    copied or renamed checkpoint, or a reused directory whose new manifest never reached the
    disk (see :func:`write_checkpoint_dir`).
    """
    manifest = read_manifest(path)
    named = STEP_DIR.match(path.resolve().name)
    saved = manifest.get("step")
    if named and isinstance(saved, int) and saved != int(named.group(1)):
        raise CheckpointError(f"{path}: its manifest is step {saved}'s")
    for name, entry in manifest["files"].items():
        f = path / name
        if Path(name).name != name or name in (".", "..", MANIFEST):
            raise CheckpointError(f"{path / MANIFEST}: lists {name!r}, not a file of its own")
        if not os.path.lexists(f):
            raise CheckpointError(f"{f}: missing (listed in the manifest)")
        size, digest = _sha256_plain(f)  # a symlink or a FIFO is refused, never followed
        if size != entry.get("bytes"):
            raise CheckpointError(f"{f}: {size} bytes, the manifest says {entry.get('bytes')}")
        if digest != entry.get("sha256"):
            raise CheckpointError(f"{f}: SHA-256 does not match the manifest (corrupt or changed)")
    return manifest


def check_finite(tensors: dict[str, torch.Tensor], path: Path, allow_inf: Any = ()) -> None:
    """Refuse NaN in any tensor, and Inf in any but ``allow_inf`` (a model's buffers: a causal
    mask of ``-inf`` is legitimate; a weight that is infinite is not), naming file and tensor."""
    for name, t in tensors.items():
        if not t.is_floating_point() or bool(torch.isfinite(t).all()):
            continue
        if bool(torch.isnan(t).any()):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN values")
        if name not in allow_inf:
            raise CheckpointError(f"{path}: tensor {name!r} holds Inf values")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, refusing a malformed file (by name); values unchecked
    (see :func:`check_finite`)."""
    data = read_plain(path)
    if len(data) < 8:
        raise CheckpointError(f"{path}: malformed safetensors file (truncated header)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise CheckpointError(
            f"{path}: malformed safetensors file (header of {header_len} bytes in a "
            f"{len(data)}-byte file: truncated?)"
        )
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: malformed safetensors file ({err})") from None
    return tensors


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the plain file ``path`` (no symlink followed); anything else — not
    UTF-8, not JSON, nested too deep, not an object — is a :class:`CheckpointError`."""
    raw = read_plain(path)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: unreadable JSON: {_why(err)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj
