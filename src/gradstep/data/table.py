"""CSV tables: a header row, columns chosen by name, numbers read with the stdlib ``csv`` module.

One reader for training (``[data] source = "csv"``) and for ``predict`` / ``eval`` input, so both
pick columns the same way:

* the **target** column (``[data] target``) is the label; it is never a feature;
* the **features** are the columns named (``[data] features``, or the names a checkpoint
  recorded), in that order, wherever they stand in the file; by default every column but the
  target and ``[data] drop``, in file order;
* columns that are neither are never parsed, so an ``id`` or free-text column costs nothing;
* every cell read must be a number, and a finite one: NaN or Inf (``nan``, ``inf`` in the file)
  is refused naming the file, the column and the first row it is in (its line in the file too).

Example::

    table = read_csv(Path("train.csv"), target="label", drop=["id"])
    table.x.shape, table.features   # (rows, features), the feature columns' names in order
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradstep.errors import UserError, did_you_mean, first_line


@dataclass
class CsvTable:
    """Features ``x`` (float64, ``(rows, len(features))``), the target column ``y`` (float64,
    or None when the file has none and none was required), the features' names in order, and
    the columns that were present but not read (``ignored``)."""

    x: np.ndarray
    y: np.ndarray | None
    features: list[str]
    ignored: list[str]


def _shown_names(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def read_csv(
    path: Path,
    *,
    target: str,
    need_target: bool,
    features: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    why: str = "named in [data] features",
) -> CsvTable:
    """Read ``path`` (see the module docstring). ``features``: the columns to use, by name
    (``why`` says in errors who named them: the config, or a checkpoint); None: all but
    ``target`` and ``drop``. ``need_target``: a file without the target column is an error
    (training, eval) rather than a table without labels (predict)."""
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if any(c.strip() for c in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as err:  # csv.Error: a NUL byte, ...
        raise UserError(f"{path}: cannot read as CSV: {first_line(err)}") from None
    if not rows:
        raise UserError(f"{path}: empty CSV file (expected a header row)")
    header = [h.strip() for h in rows[0]]
    body, lines = rows[1:], lines[1:]
    has_target = target in header
    if need_target and not has_target:
        raise UserError(
            f"{path}: no column [data] target = {target!r}{did_you_mean(target, header)}; "
            f"columns: {_shown_names(header)}"
        )
    for name in drop:
        if name not in header:
            raise UserError(
                f"{path}: [data] drop names {name!r}, which is not a column"
                f"{did_you_mean(name, header)}; columns: {_shown_names(header)}"
            )
    if features is None:
        names = [h for h in header if h != target and h not in drop]
        if not names:
            raise UserError(f"{path}: no feature columns (only the target {target!r})")
    else:
        names = list(features)
        if target in names:
            raise UserError(f"{path}: the feature columns ({why}) include the target {target!r}")
        unused = [h for h in header if h not in names and h != target]
        for name in names:
            if name not in header:
                raise UserError(
                    f"{path}: no column {name!r} ({why}){did_you_mean(name, unused)}; "
                    f"columns: {_shown_names(header)}"
                )
    wanted = names + ([target] if has_target else [])
    for name in wanted:
        if header.count(name) > 1:
            raise UserError(f"{path}: the header names column {name!r} more than once")
    cols = [header.index(name) for name in wanted]
    if not body:
        raise UserError(f"{path}: the dataset is empty (a header but no rows)")
    for row, line in zip(body, lines, strict=True):
        if len(row) != len(header):
            raise UserError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
    table = _numbers(path, body, lines, cols, wanted)
    _check_finite(path, table, lines, wanted)
    ignored = [h for h in header if h not in wanted and h not in drop]
    x = table[:, : len(names)]
    y = table[:, len(names)] if has_target else None
    return CsvTable(np.ascontiguousarray(x), y, names, ignored)


def _numbers(
    path: Path, body: list[list[str]], lines: list[int], cols: list[int], names: list[str]
) -> np.ndarray:
    """The chosen cells as float64: NumPy converts the strings in one call; only when a cell is
    not a number are the cells walked, to name the first bad one."""
    cells = [[row[j] for j in cols] for row in body]
    try:
        return np.array(cells, dtype=np.str_).astype(np.float64)
    except ValueError:
        pass
    for cells_row, line in zip(cells, lines, strict=True):
        for name, cell in zip(names, cells_row, strict=True):
            try:
                float(cell)
            except ValueError:
                raise UserError(
                    f"{path}:{line}: column {name!r}: {cell!r} is not a number"
                ) from None
    # every cell is a number to Python but not to NumPy (a form like '1_000')
    return np.array([[float(c) for c in r] for r in cells], dtype=np.float64)


def _check_finite(path: Path, table: np.ndarray, lines: list[int], names: list[str]) -> None:
    """One pass over the table; the first NaN or Inf is located only when there is one."""
    if bool(np.isfinite(table).all()):
        return
    bad = ~np.isfinite(table)
    row, col = (int(i) for i in np.argwhere(bad)[0])
    from gradstep.data.checks import more_values, nonfinite_word

    more = more_values(int(bad.sum()), "cell")
    value = nonfinite_word(float(table[row, col]))
    raise UserError(
        f"{path}: column {names[col]!r} is {value} in row {row + 1} (line {lines[row]}){more}; "
        "NaN and Inf are not data: fill them in or drop those rows"
    )
