"""``metrics.jsonl``: one JSON object a line, appended and flushed as each record arrives, so a
run that dies keeps every line logged before it died.

A write the disk refuses (full, read-only, I/O error) raises its ``OSError`` naming this file and
leaves the sink closed; the line may be cut short, which a resume undoes (it truncates the file
to what the checkpoint it continues from had seen).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from gradstep.logging.base import Sink, drop_file, name_file


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


class JsonlSink(Sink):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[str] | None = None

    def open(self, state: Any) -> None:
        self._f = self.path.open("a", encoding="utf-8")  # an OSError here names the file

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            self.open(None)
        drop = ("epochs", "batches", "total_steps")
        line = {k: _clean(v) for k, v in record.items() if k not in drop}
        assert self._f is not None
        try:
            self._f.write(json.dumps(line, allow_nan=False) + "\n")
            self._f.flush()  # a full disk says so here, at this very line
        except OSError as err:
            f, self._f = self._f, None
            drop_file(f, err, self.path)
            raise

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None  # closed even if the close fails: it never raises twice
            try:
                f.close()
            except OSError as err:
                name_file(err, self.path)
                raise
