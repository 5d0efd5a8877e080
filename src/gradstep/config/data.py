"""``[data]``: where the samples come from and how they are prepared (see
:mod:`gradstep.config`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from gradstep.config.base import MAX_RANDOM_NUMBERS, MAX_SAMPLES, _Section

GENERATED_SOURCES = ("digits", "random", "circles", "moons")
"""Sources that make their own samples: ``[data] path`` means nothing to them."""


def infer_source(path: str) -> str:
    """The ``[data] source`` a file's name implies: ``.csv`` -> csv, ``.npz`` -> npz, an IDX file
    (``train-images-idx3-ubyte.gz``, ``*.idx``) -> mnist. Anything else (a ``.npy``, which holds
    one array and no labels; a folder; another extension) raises ``ValueError`` saying what to
    set: a path is never silently left unused while the default example trains."""
    name = Path(path).name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".npy"):
        raise ValueError(
            f"path = {path!r}: a .npy file holds one array, and training needs inputs and "
            "labels: save both with numpy.savez('data.npz', X=X, y=y) and set path to that file"
        )
    if "-idx" in name or name.endswith((".idx", "-ubyte", "-ubyte.gz")):
        return "mnist"
    raise ValueError(
        f"path = {path!r}: cannot tell the source from the file name (.csv, .npz, or an IDX "
        "file such as train-images-idx3-ubyte.gz); set [data] source (csv, npz, or mnist for "
        "a folder of MNIST files)"
    )


def _normalize_problem(v: list[Any] | tuple[Any, ...]) -> str | None:
    """Why ``[data] normalize = [mean, std]`` is not two numbers or two lists of numbers of one
    length, with every std a positive finite number; None if it is fine."""
    if len(v) != 2:
        return f"{len(v)} items"

    def numbers(x: Any) -> list[float] | None:
        items = x if isinstance(x, list | tuple) else [x]
        if not items or not all(
            isinstance(i, int | float) and not isinstance(i, bool) and math.isfinite(i)
            for i in items
        ):
            return None
        return [float(i) for i in items]

    mean, std = numbers(v[0]), numbers(v[1])
    if mean is None or std is None:
        return "not finite numbers"
    if isinstance(v[0], list | tuple) != isinstance(v[1], list | tuple) or len(mean) != len(std):
        return "mean and std of different lengths"
    if min(std) <= 0:
        return "a std that is not positive"
    return None


class DataSection(_Section):
    """``[data]``: where samples come from and how they are prepared.

    ``source`` left unset with ``path`` set is inferred from the file name (see
    :func:`infer_source`); ``path``, ``val_path``, ``target``, ``features`` or ``drop`` set while
    the default example (digits) would train is an error, never silently ignored."""

    source: str = "digits"
    """digits, random, circles, moons, mnist, csv, npz, or ``"file.py:function"``; unset with
    ``path`` set: inferred from its name (.csv, .npz, IDX)."""
    path: str | None = None
    val_path: str | None = None
    val_split: float = Field(0.2, ge=0.0, lt=1.0)
    normalize: bool | list[float] | list[list[float]] = True
    """``true``: standardise in-memory float features with the training split's mean and std
    (per feature for tabular data, per channel for images); ``false``: leave them; ``[mean,
    std]``: use these constants instead of fitting them — two numbers (the tutorials'
    ``Normalize((0.1307,), (0.3081,))`` is ``[0.1307, 0.3081]``), or two lists of one value per
    feature (per channel for images). Saved with every checkpoint, applied by predict."""
    # source-specific keys
    n: int = Field(1000, ge=1, le=MAX_SAMPLES)
    """Number of samples (random, circles, moons); at most :data:`MAX_SAMPLES`."""
    n_features: int = Field(10, ge=1, le=1_000_000)
    """Feature count (random). ``features = <int>`` is accepted as its old name."""
    classes: int = Field(2, ge=2, le=1_000_000)
    """Class count (random)."""
    noise: float = Field(0.1, ge=0.0)
    """Gaussian noise (circles, moons)."""
    factor: float = Field(0.5, gt=0.0, lt=1.0)
    """Inner/outer circle ratio (circles)."""
    target: str = "target"
    """The target column's name (csv; also the label column ``eval --data FILE.csv`` reads)."""
    features: list[str] | None = None
    """csv: the feature columns, by header name, in this order (default: every column but
    ``target`` and ``drop``, in file order). The names are saved with every checkpoint, so
    predict and eval pick the same columns by name from any CSV, in any order. (An integer is
    the random source's ``n_features``, by its old name.)"""
    drop: list[str] = Field(default_factory=list)
    """csv: columns that are not features (ids, free text): never read as numbers."""
    input_key: str | int | None = None
    """A Dataset whose samples are dicts: the input's key (``"image"``); tuples of more than
    two items: the input's position (``0``). Give ``target_key`` with it."""
    target_key: str | int | None = None
    """The target's key or position in each sample (see ``input_key``)."""
    download: bool = True
    """Download MNIST when it is missing from ``path``."""
    num_workers: int = Field(0, ge=0)
    """DataLoader workers, used only for a generic ``Dataset`` (and to scan its labels when the
    class count cannot be read from it)."""

    @model_validator(mode="before")
    @classmethod
    def _features_count_alias(cls, raw: Any) -> Any:
        """``features = 10`` (an integer) is the random source's count under its old name."""
        if not isinstance(raw, dict):
            return raw
        count = raw.get("features")
        if isinstance(count, int) and not isinstance(count, bool):
            if not 1 <= count <= 1_000_000:
                raise ValueError(
                    f"features = {count}: expected a feature count (n_features) from 1 to "
                    "1,000,000, or a list of CSV column names"
                )
            raw = dict(raw)
            del raw["features"]
            if raw.get("n_features", count) != count:
                raise ValueError(
                    f"features = {count} and n_features = {raw['n_features']}: give one "
                    "(features = <int> is n_features' old name; a list of names picks csv columns)"
                )
            raw["n_features"] = count
        return raw

    @field_validator("path", "val_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("expected a path without NUL characters")
        return v

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            if _normalize_problem(v) is not None:
                raise ValueError("not [mean, std]")
            return [list(x) if isinstance(x, list | tuple) else x for x in v]
        return v

    @field_validator("features", "drop")
    @classmethod
    def _columns(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if any(not name.strip() for name in v):
            raise ValueError("expected a list of column names, none empty")
        repeated = [name for i, name in enumerate(v) if name in v[:i]]
        if repeated:
            raise ValueError(f"expected each column once; {repeated[0]!r} is named twice")
        return v

    @model_validator(mode="after")
    def _source_and_keys(self) -> DataSection:
        if "source" not in self.model_fields_set:
            if self.path is not None:
                self.source = infer_source(self.path)
            else:
                set_here = [
                    f"{key} = {getattr(self, key)!r}"
                    for key in ("val_path", "features", "drop")
                    if getattr(self, key)
                ]
                if self.target != "target":
                    set_here.append(f"target = {self.target!r}")
                if set_here:
                    raise ValueError(
                        f"{set_here[0]} is set but not path, so the default example (digits) "
                        "would train: set path to your data file (its source is inferred "
                        "from the name), or source"
                    )
        if self.source in GENERATED_SOURCES and self.path is not None:
            raise ValueError(
                f"path = {self.path!r} is not used by source = {self.source!r}, which makes its "
                "own samples: remove path, or set source to csv, npz or mnist"
            )
        for key in ("features", "drop"):
            if getattr(self, key) and self.source != "csv":
                raise ValueError(
                    f"{key} = {getattr(self, key)!r} names CSV columns, but source = "
                    f"{self.source!r}; it is for source = 'csv'"
                )
        if self.features and self.drop:
            raise ValueError("features and drop both choose columns: give one of them")
        if (self.input_key is None) != (self.target_key is None):
            given = "input_key" if self.target_key is None else "target_key"
            missing = "target_key" if self.target_key is None else "input_key"
            raise ValueError(f"{given} is set but not {missing}: give both")
        if self.input_key is not None and self.input_key == self.target_key:
            raise ValueError(f"input_key and target_key are both {self.input_key!r}")
        # the random source's feature tensor (circles and moons have 2 features a sample)
        numbers = self.n * self.n_features
        if self.source == "random" and numbers > MAX_RANDOM_NUMBERS:
            raise ValueError(
                f"n = {self.n} × features = {self.n_features} is {numbers:,} numbers, more than "
                f"the {MAX_RANDOM_NUMBERS:,} (4 GB of float32) the random source makes"
            )
        return self
