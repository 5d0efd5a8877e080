"""The one exception type for user mistakes.

Anything the user can fix — a config key, a file, a value, data that does not fit the model —
raises :class:`UserError` with one line that names *what* and *where*. The command line turns it
into that line on stderr and exit status 2 (never a traceback); the Python API lets it propagate
(it is a ``ValueError``, so ``except ValueError`` works too). Every other exception is a bug in
gradstep or in user code and keeps its traceback (exit status 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input (config, data, model, checkpoint) that the user can fix. CLI exit status 2."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest option, or ``""`` if none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class NonFiniteError(RuntimeError):
    """Training produced a NaN or Inf loss or gradient (``on_nonfinite = "fail"``), or a
    checkpoint would have held non-finite weights. Names the step. CLI exit status 1."""


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message (or ``default``, else its type's name): what a
    one-line error shows of a library's multi-line message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else (default or type(err).__name__)
