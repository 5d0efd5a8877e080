"""``metrics.jsonl``: one JSON object a line, appended and flushed as each record arrives, so a
run that dies keeps every line logged before it died."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from gradstep.logging.base import Sink


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


class JsonlSink(Sink):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[str] | None = None

    def open(self, state: Any) -> None:
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            self.open(None)
        drop = ("epochs", "batches", "total_steps")
        line = {k: _clean(v) for k, v in record.items() if k not in drop}
        assert self._f is not None
        self._f.write(json.dumps(line, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
