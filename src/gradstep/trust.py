"""Which code a checkpoint or a run directory may make gradstep import: the trust rule.

A checkpoint is data. Its manifest proves that its files are whole, not who wrote them: anyone
who hands out a checkpoint can change ``model.json`` or ``state.json`` and seal the manifest
again. So nothing a checkpoint or a run directory names (``model.json``'s model, the saved
config's ``[model] name`` / ``[data] source``, ``base_dir``) is imported unless it is

(a) a built-in zoo model (no import at all);
(b) a ``"file.py:Class"`` file whose real path — after ``..`` and symlinks are resolved — lies
    inside the code folder the user named (``--code-dir``, ``code_dir=``; default: the working
    directory) and outside every run directory and checkpoint; or
(c) code the user trusts for this call: ``--trust-code`` / ``trust_code=True`` (as
    ``trust_remote_code`` in Hugging Face), or a ``package.module:Class`` whose module the
    user's own Python process has already imported (``import mypkg.nets`` before
    ``gs.load_model``): gradstep then imports nothing, it only looks the class up.

The decision is made from the name (and, for a file, its resolved path) before anything is
imported: a refused name never runs a line of code, not even a module's import side effects.

A config the user names (``gradstep fit CONFIG.toml``, ``gs.Trainer(...)``) is the user's own
and is trusted: :func:`check_import` applies a rule only while :func:`trust_rule` is active,
which loading a checkpoint and ``gradstep resume`` always set.

Example::

    with trust_rule(CodeTrust.for_checkpoint(code_dir=None, trust_code=False, run_dir=run)):
        model = build_model(name, args, None, base)   # refused names raise CheckpointError
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gradstep.errors import UserError

MANIFEST = "manifest.json"


class UntrustedCodeError(UserError):
    """A checkpoint or run directory named code that the trust rule does not allow."""


@dataclass(frozen=True)
class CodeTrust:
    """The rule in force: the user's code folder, whether the user trusts all code for this
    call, the run directories code must stay out of, and whose words the names are (for
    messages: ``"the checkpoint"``, ``"the run's config"``)."""

    code_dir: Path
    trust_code: bool = False
    run_dirs: tuple[Path, ...] = ()
    origin: str = "the checkpoint"

    @classmethod
    def make(
        cls,
        code_dir: str | Path | None = None,
        trust_code: bool = False,
        run_dirs: tuple[Path | None, ...] = (),
        origin: str = "the checkpoint",
    ) -> CodeTrust:
        folder = Path(code_dir) if code_dir is not None else Path.cwd()
        if code_dir is not None and not folder.is_dir():
            raise UserError(f"--code-dir {folder}: not a folder")
        runs = tuple(_real(p) for p in run_dirs if p is not None)
        return cls(_real(folder), trust_code, runs, origin)

    def check_file(self, path: Path, spec: str, what: str) -> None:
        """Refuse ``path`` (the file ``spec`` names, as it would be imported) unless rule (b)
        or (c) allows it."""
        if self.trust_code:
            return
        real = _real(path)
        hint = "(--code-dir DIR, code_dir=DIR) or trust it (--trust-code, trust_code=True)"
        if not real.is_relative_to(self.code_dir):
            raise UntrustedCodeError(
                f"{what} = {spec!r} (from {self.origin}): {real} lies outside the code folder "
                f"{self.code_dir}; gradstep imports a checkpoint's code only from the folder "
                f"you name {hint}"
            )
        inside = inside_run(real, self.run_dirs)
        if inside is not None:
            raise UntrustedCodeError(
                f"{what} = {spec!r} (from {self.origin}): {real} lies inside the run or "
                f"checkpoint {inside}, whose files are data, never code; keep the model's code "
                f"in your own folder {hint}"
            )

    def check_module(self, module: str, spec: str, what: str) -> None:
        """Refuse a dotted module unless it is trusted or already imported (rule (c))."""
        if self.trust_code or module in sys.modules:
            return
        raise UntrustedCodeError(
            f"{what} = {spec!r} (from {self.origin}): gradstep does not import a module a "
            f"checkpoint names; if you trust {module!r}, pass --trust-code (trust_code=True), "
            "or import it in your own script before loading"
        )

    def check_dir(self, path: Path, what: str) -> None:
        """Refuse a folder from the checkpoint (``base_dir``) that lies in a run directory."""
        if self.trust_code:
            return
        inside = inside_run(_real(path), self.run_dirs)
        if inside is not None:
            raise UntrustedCodeError(
                f"{what} {path} (from {self.origin}) lies inside the run or checkpoint "
                f"{inside}; a run's files are data, never a code folder"
            )


def _real(path: Path) -> Path:
    """The real path: absolute, ``..`` and every symlink resolved (missing parts kept)."""
    return Path(path).resolve(strict=False)


def _is_run_or_checkpoint(folder: Path) -> bool:
    """A gradstep run directory (``config.toml`` beside ``checkpoints/`` or ``metrics.jsonl``)
    or a checkpoint (a folder with ``manifest.json``)."""
    try:
        if (folder / MANIFEST).is_file():
            return True
        if (folder / "config.toml").is_file():
            return (folder / "checkpoints").is_dir() or (folder / "metrics.jsonl").is_file()
    except OSError:  # an unreadable folder: not one we can call code's home
        return True
    return False


def inside_run(real: Path, run_dirs: tuple[Path, ...] = ()) -> Path | None:
    """The run directory or checkpoint that ``real`` (a resolved path) lies in, or None."""
    for run in run_dirs:
        if real.is_relative_to(run):
            return run
    folder = real if real.is_dir() else real.parent
    for parent in (folder, *folder.parents):
        if _is_run_or_checkpoint(parent):
            return parent
    return None


_RULE: contextvars.ContextVar[CodeTrust | None] = contextvars.ContextVar(
    "gradstep_trust_rule", default=None
)


@contextlib.contextmanager
def trust_rule(rule: CodeTrust | None) -> Iterator[None]:
    """Apply ``rule`` to every import :mod:`gradstep.importing` makes inside the block (None:
    the names are the user's own, nothing is checked)."""
    token = _RULE.set(rule)
    try:
        yield
    finally:
        _RULE.reset(token)


def current_rule() -> CodeTrust | None:
    return _RULE.get()


__all__ = ["CodeTrust", "UntrustedCodeError", "current_rule", "inside_run", "trust_rule"]
