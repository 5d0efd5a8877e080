"""Load a user's object from ``"file.py:Name"`` or ``"package.module:Name"``.

Used for ``[model] name = "my_model.py:Net"`` and ``[data] source = "my_data.py:load"``. A file
path is resolved against the config file's directory first, then the working directory.

Every import goes through :func:`load_object`, which applies the trust rule in force
(:mod:`gradstep.trust`: set while a checkpoint or a run directory supplies the name) before it
imports anything.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from gradstep.errors import UserError


def is_import_spec(text: str) -> bool:
    """True for ``"file.py:Name"`` and ``"package.module:Name"`` forms."""
    return ":" in text and not text.startswith(":") and not text.endswith(":")


def load_object(spec: str, base_dir: Path | None, what: str) -> Any:
    """Return the object ``spec`` names; ``what`` (e.g. ``"[model] name"``) appears in errors."""
    from gradstep.trust import current_rule

    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        module = _load_file(target, base_dir, what, spec)
    else:
        rule = current_rule()
        if rule is not None:
            rule.check_module(target, spec, what)
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise UserError(f"{what} = {spec!r}: cannot import module {target!r}: {err}") from None
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        from gradstep.errors import did_you_mean

        raise UserError(f"{what} = {spec!r}: {target} has no {attr!r}{did_you_mean(attr, names)}")
    return getattr(module, attr)


def _load_file(target: str, base_dir: Path | None, what: str, spec: str) -> Any:
    from gradstep.trust import current_rule

    candidates = [Path(target)] if Path(target).is_absolute() else []
    if not candidates:
        if base_dir is not None:
            candidates.append(base_dir / target)
        candidates.append(Path.cwd() / target)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        tried = ", ".join(str(p) for p in candidates)
        raise UserError(f"{what}: file {target!r} not found (looked in {tried})")
    path = path.resolve()
    rule = current_rule()
    if rule is not None:  # decided before the file is imported
        rule.check_file(path, spec, what)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"gradstep_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{what}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        del sys.modules[name]
        raise UserError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception:
        del sys.modules[name]
        raise
    return module
