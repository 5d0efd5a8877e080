"""Bad values in the data: NaN or Inf in features or targets is bad input, found before the
first step.

A NaN in the data makes every loss NaN; training would then stop at its first log line with
advice about the learning rate, which is not the problem. So in-memory data (csv, npz, arrays,
tensors, the built-in sources, a data function's arrays) is checked whole at start-up: one
``torch.aminmax`` pass per float tensor (NaN propagates into both ends, an Inf is one of them),
which also gives the value range the checkpoint records (see :func:`value_range`). The first
bad sample and feature are located only when the check fails. A generic ``Dataset`` is not read
whole at start-up: the samples the trainer probes (its first two) are checked.
"""

from __future__ import annotations

import math

import torch

from gradstep.errors import UserError


def nonfinite_word(value: float) -> str:
    """``NaN``, ``Inf`` or ``-Inf``, as people write them."""
    if math.isnan(value):
        return "NaN"
    return "Inf" if value > 0 else "-Inf"


def more_values(count: int, unit: str) -> str:
    """`` (and 3 more non-finite values)`` after the first of ``count``."""
    if count <= 1:
        return ""
    return f" (and {count - 1} more non-finite {unit}{'s' if count > 2 else ''})"


def _where(index: tuple[int, ...]) -> str:
    sample, rest = index[0], index[1:]
    if not rest:
        return f"sample {sample}"
    feature = rest[0] if len(rest) == 1 else rest
    return f"sample {sample}, feature {feature}"


def check_finite(t: torch.Tensor, what: str, part: str) -> tuple[float, float] | None:
    """Raise :class:`UserError` if float tensor ``t`` holds a NaN or an Inf, naming ``what``
    (the file or the argument), ``part`` (``"X"``, ``"y"``) and the first bad sample and feature
    index; return its ``(min, max)`` (None for an empty or non-float tensor). One pass and one
    host sync."""
    if not t.is_floating_point() or t.numel() == 0:
        return None
    lo_t, hi_t = torch.aminmax(t.detach())
    lo, hi = float(lo_t), float(hi_t)  # sync: once per tensor, at start-up
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    bad = ~torch.isfinite(t.detach())
    first = tuple(int(i) for i in bad.nonzero()[0])
    value = nonfinite_word(float(t[first]))
    more = more_values(int(bad.sum()), "value")
    raise UserError(
        f"{what}: {part} is {value} at {_where(first)}{more}; NaN and Inf are not data: "
        "fill them in or drop those samples"
    )


def value_range(x: torch.Tensor, y: torch.Tensor | None, what: str) -> tuple[float, float] | None:
    """Check features ``x`` and targets ``y`` (see :func:`check_finite`); the range of ``x``."""
    found = check_finite(x, what, "X")
    if y is not None:
        check_finite(y, what, "y")
    return found
