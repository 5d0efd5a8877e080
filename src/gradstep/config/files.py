"""Configs in and out: TOML files, ``--set`` overrides, flat keywords, the one-line error for
a bad value, and the resolved config written back as TOML (see :mod:`gradstep.config`)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from gradstep.config.sections import _EXPECTED, FLAT_KEYS, SECTIONS, Config
from gradstep.errors import UserError, did_you_mean


def _section_key(section: str, key: str) -> str:
    return f"[{section}] {key}"


def _shown(value: Any) -> str:
    """``value``'s repr for a one-line message, cut short if long (a 300-character name)."""
    text = repr(value)
    if len(text) <= 80:
        return text
    if isinstance(value, str):
        return f"{text[:60]}... ({len(value)} characters)"
    if isinstance(value, list | tuple):
        return f"{text[:60]}... ({len(value)} items)"
    return f"{text[:60]}..."


def _format_error(
    err: ValidationError,
    origin: str,
    name: Callable[[str, str], str] = _section_key,
    raw: dict[str, Any] | None = None,
) -> str:
    """One line for the first error: where, which key, the value, and what was expected.

    ``raw`` is the input: an error inside a list or tuple (``betas = [nan, nan]``) shows the
    key's whole value, not the one element pydantic reports.
    """
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"]]
    where = f"{origin}: " if origin else ""
    if e["type"] == "extra_forbidden":
        if len(loc) == 1:
            return f"{where}unknown section [{loc[0]}]{did_you_mean(loc[0], SECTIONS)}"
        section, key = loc[0], loc[1]
        valid = SECTIONS[section].model_fields if section in SECTIONS else []
        return f"{where}unknown key {name(section, key)}{did_you_mean(key, valid)}"
    section = loc[0] if loc else "?"
    key = loc[1] if len(loc) > 1 else ""
    expected = _EXPECTED.get((section, key))
    if e["type"] == "finite_number" and len(loc) == 2:
        expected = "a finite number"  # lr = inf is positive, and still refused
    if expected is None:
        expected = e["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
        expected = expected.removeprefix("expected ")
        expected = expected[0].lower() + expected[1:] if expected else expected
    if not key or (e["type"] == "missing" and len(loc) == 2):
        return f"{where}[{section}]: {expected}"
    value = e.get("input")
    given = (raw or {}).get(section)
    if len(loc) > 2 and isinstance(given, dict) and key in given:
        value = given[key]
    shown = f" = {_shown(value)}" if not isinstance(value, dict) else ""
    return f"{where}{name(section, key)}{shown}: expected {expected}"


def validate_config(raw: dict[str, Any], origin: str = "") -> Config:
    """Build a :class:`Config` from nested dicts, raising :class:`UserError` with one clear line."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_error(err, origin, raw=raw)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (``model.args.hidden=[64,32]``) into a key path and a value.

    The value is read as a TOML value; if that fails it is taken as a plain string.
    """
    dotted, sep, value_text = text.partition("=")
    if not sep or not dotted.strip():
        raise UserError(f"--set {text!r}: expected section.key=value")
    path = [p.strip() for p in dotted.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise UserError(f"--set {text!r}: expected section.key=value (e.g. train.epochs=5)")
    value_text = value_text.strip()
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: "[[[[..." 500 deep
        value = value_text
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested dict ``raw`` with each ``section.key=value`` set."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: {part!r} is a value, not a section")
            child = dict(child)
            node[part] = child
            node = child
        node[path[-1]] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, raising :class:`UserError` naming the file for a missing or bad one.

    Bad covers what a fuzzer finds besides syntax: bytes that are not UTF-8 (TOML is UTF-8
    text; ``tomllib`` raises ``UnicodeDecodeError``), nesting deeper than Python's recursion
    limit (``a = [[[[...]]]]`` 500 deep: ``RecursionError``), and a file that cannot be read.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected a TOML config file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{p}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise UserError(
            f"{p}: not valid TOML: not UTF-8 text (byte {err.object[err.start]:#04x} at "
            f"offset {err.start})"
        ) from None
    except RecursionError:
        raise UserError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as err:
        raise UserError(f"{p}: cannot read the config file: {err.strerror or err}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (or none: all defaults) and apply ``--set`` overrides."""
    raw = read_toml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, origin=str(path) if path is not None else "")


def config_from_flat(settings: dict[str, Any]) -> Config:
    """Build a :class:`Config` from ``gs.Trainer`` keyword arguments (``epochs=5, lr=0.1``)."""
    raw: dict[str, Any] = {}
    for flat, value in settings.items():
        if flat not in FLAT_KEYS:
            raise UserError(f"unknown setting '{flat}'{did_you_mean(flat, FLAT_KEYS)}")
        section, key = FLAT_KEYS[flat]
        raw.setdefault(section, {})[key] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        flat_name = {v: k for k, v in FLAT_KEYS.items()}
        raise UserError(_format_error(err, "", lambda s, k: flat_name[(s, k)], raw)) from None


# --- writing the resolved config back out ------------------------------------------------------


def _no_null(where: str, value: Any) -> None:
    """TOML has no null: a ``None`` inside a value (``[model] args = {"norm": None}`` from the
    Python API) cannot be written, so it is refused by name rather than dropped."""
    if value is None:
        raise UserError(
            f"{where} = None cannot be written to config.toml (TOML has no null); "
            "leave the key out to take its default"
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _no_null(f"{where}.{k}", v)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _no_null(f"{where}[{i}]", v)


def to_toml(cfg: Config) -> str:
    """The config as TOML with every key written out; unset optional keys appear as comments.

    Written by ``tomli-w`` (the standard TOML writer: quoting, unicode, ``inf``/``nan``, nested
    tables), one section at a time so each section's unset keys can follow its header as
    ``# key = (not set)`` comments, which a writer of data cannot express."""
    lines = ["# Resolved gradstep config: every key, defaults included.", ""]
    for section, values in cfg.model_dump().items():
        lines.append(f"[{section}]")
        tables = []  # a table-valued key ([model] args) follows its section's plain keys
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (not set)")
                continue
            _no_null(f"[{section}] {key}", value)
            if isinstance(value, dict):
                tables.append(tomli_w.dumps({section: {key: value}}))
            else:
                lines.append(tomli_w.dumps({key: value}).rstrip("\n"))
        lines += ["", *tables]
    return "\n".join(lines)
