"""Typed configuration: every key, its default, its validation, ``--set`` overrides.

One :class:`Config` describes a run. It comes from a TOML file (``gradstep fit CONFIG.toml``),
from ``--set section.key=value`` overrides, or from the flat keyword arguments of
:class:`gradstep.Trainer` (``epochs=5, lr=0.1, optimizer="sgd"``); all three meet here.

Rules a user can rely on:

* every key has a default, so an empty file (or no file) is a valid config: the built-in example;
* an unknown section or key is an error that names it and suggests the closest valid one;
* a value of the wrong type or out of range is an error naming ``[section] key``, the value and
  what was expected; no float key takes NaN or infinity (none has a meaning for them: "no limit"
  is the key left unset), and the sizes a machine could never allocate are refused up front;
* ``--set`` values are read as TOML values (``[64, 32]``, ``0.1``, ``true``), and anything that is
  not valid TOML is taken as a string, so ``--set train.batch_size=full`` works unquoted.

Example::

    cfg = load_config("examples/mnist_simplenet.toml", overrides=["train.epochs=2"])
    cfg.train.epochs  # 2
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gradstep.errors import UserError, did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LOSSES = ("cross_entropy", "mse", "l1", "bce_with_logits")
# The learning rate each optimizer gets when none is given (PyTorch's own defaults, and 0.01 for
# SGD, the value every tutorial starts from). The resolved config writes the value out.
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2}


MAX_RUN_NAME = 200
"""The longest run name, in UTF-8 bytes: file systems allow 255 a path component, and a taken
name grows a ``-2``, ``-3``, ... suffix (not counted: a resumed run's config holds the name its
directory really has)."""
MAX_SEED = 2**63
"""Seeds are ``0 <= seed < 2**63``: TOML's non-negative integers, so the resolved config reads
back, and within what ``torch.manual_seed`` takes (NumPy is seeded with ``seed % 2**32``)."""
MAX_SAMPLES = 100_000_000
"""The most samples a generated source (random, circles, moons) makes: 10⁸ samples of 10 float32
features is 4 GB already; a larger ``n`` is a typo, not an experiment."""
MAX_RANDOM_NUMBERS = 1_000_000_000
"""The most numbers (``n × features``) the random source makes: 4 GB of float32."""


class _Section(BaseModel):
    # allow_inf_nan=False: pydantic lets ``inf`` through Field(ge=0) and NaN through a plain
    # float; no gradstep key means anything by them (unset is how a key says "no limit").
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def run_name_problem(name: str) -> str | None:
    """What makes ``name`` unfit to be one run directory's name, or None if it is fine.

    A run name is exactly one path component, so ``<dir>/<name>`` is always directly inside
    ``[run] dir``: no ``/`` or ``\\`` (``"../../x"`` must not put a run elsewhere), not ``.`` or
    ``..``, not empty, no control characters (NUL cannot be in a path; a newline garbles every
    log line naming the run), at most :data:`MAX_RUN_NAME` bytes in UTF-8 besides a ``-N``
    suffix.
    """
    if not name:
        return "expected a non-empty directory name"
    if "/" in name or "\\" in name:
        return "expected one directory name, without '/' or '\\'"
    if name in (".", ".."):
        return "expected a directory name, not '.' or '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "expected a directory name without control characters (NUL, newline, ...)"
    try:
        size = len(re.sub(r"-[0-9]{1,4}$", "", name).encode("utf-8"))
    except UnicodeEncodeError:
        return "expected a directory name that is valid text (it holds a lone surrogate)"
    if size > MAX_RUN_NAME:
        return f"expected a directory name of at most {MAX_RUN_NAME} bytes (it has {size})"
    return None


class RunSection(_Section):
    """``[run]``: where the run is written, its seed and its device."""

    name: str | None = None
    """Run directory name, one path component (see :func:`run_name_problem`); default: the
    config file's stem, or ``<model>-<data>``."""
    dir: str = "runs"
    seed: int = Field(0, ge=0, lt=MAX_SEED)
    """``0 <= seed < 2**63`` (see :data:`MAX_SEED`)."""
    device: str = "auto"
    """``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        problem = None if v is None else run_name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("expected a path without NUL characters")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        base, _, index = v.partition(":")
        if base not in ("auto", "cpu", "cuda", "mps") or (index and not index.isdigit()):
            raise ValueError('expected "auto", "cpu", "cuda", "cuda:N" or "mps"')
        return v


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


class ModelSection(_Section):
    """``[model]`` and ``[model.args]``: which model, built with which constructor arguments."""

    name: str = "mlp"
    args: dict[str, Any] = Field(default_factory=dict)


MAX_COUNT = 2**63 - 1
"""The largest count ``[train]`` takes (epochs, steps, batch sizes, ...): TOML's largest integer,
and the largest a C ``long long`` (torch's sizes) holds; a larger one is refused here, before a
run directory is created, not later with a traceback from inside torch."""


class TrainSection(_Section):
    """``[train]``: the loop's counts: epochs, steps, batches, the loss and logging. Every
    count is at most :data:`MAX_COUNT`."""

    epochs: int = Field(10, ge=1, le=MAX_COUNT)
    max_steps: int | None = Field(None, ge=1, le=MAX_COUNT)
    """Stop after this many optimizer steps (whichever of epochs / max_steps ends first)."""
    batch_size: int | Literal["full"] = 32
    accumulate: int = Field(1, ge=1, le=MAX_COUNT)
    """Micro-batches per optimizer step (gradient accumulation)."""
    effective_batch: int | None = Field(None, ge=1, le=MAX_COUNT)
    """Samples per optimizer step; sets ``accumulate = effective_batch / batch_size`` (it must
    divide). Give this or ``accumulate``, not both."""
    drop_last: bool = False
    shuffle: bool = True
    loss: Literal["cross_entropy", "mse", "l1", "bce_with_logits"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    log_every: int = Field(50, ge=1, le=MAX_COUNT)
    """Print and record a progress line every this many steps of an epoch."""
    val_every: int | Literal["epoch"] = "epoch"
    """Validate at each epoch's end, or every this many global steps (and at the end of fit);
    an epoch's record then carries the latest validation."""
    progress: bool | Literal["auto"] = "auto"
    """A live progress bar: ``"auto"`` shows it only when output is a terminal."""
    clip_norm: float | None = Field(None, gt=0.0)
    """Clip the global gradient L2 norm to this (``clip_grad_norm_``) before each step."""
    clip_value: float | None = Field(None, gt=0.0)
    """Clamp every gradient element to [-clip_value, clip_value] before each step."""
    grad_norm: bool = True
    """Compute the global gradient L2 norm (before clipping) every step, on the device, and log
    it every ``log_every`` steps and per epoch; gradient health checks need it."""
    grad_norm_per_layer: bool = False
    """Also log each parameter's gradient norm (``grad_norm/<name>``) every ``log_every`` steps."""
    on_nonfinite: Literal["fail", "skip"] = "fail"
    """A non-finite loss or gradient: ``"fail"`` stops the run naming the step (found at the
    next log line or epoch end, without a per-step sync); ``"skip"`` skips that optimizer step
    (one host sync per step) and counts it."""
    sync_batchnorm: bool = False
    """Under several processes, convert BatchNorm layers to ``SyncBatchNorm``: statistics over
    the global micro-batch (as one process with ``batch_size × world`` sees), not each rank's."""
    on_oom: Literal["fail", "fallback"] = "fail"
    """Out of memory in a micro-batch: ``"fallback"`` halves the micro-batch and doubles the
    accumulation (same effective batch) and retries the same samples."""

    @field_validator("batch_size", "val_every")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1")
        if isinstance(v, int) and v > MAX_COUNT:
            raise ValueError(f"must be at most 2**63 - 1 ({MAX_COUNT})")
        return v

    @model_validator(mode="after")
    def _effective_batch(self) -> TrainSection:
        if self.effective_batch is None:
            return self
        if self.batch_size == "full":
            raise ValueError('effective_batch needs a numeric batch_size, not "full"')
        if self.effective_batch % self.batch_size:
            raise ValueError(
                f"effective_batch = {self.effective_batch} is not a multiple of "
                f"batch_size = {self.batch_size}"
            )
        derived = self.effective_batch // self.batch_size
        if self.accumulate not in (1, derived):  # a resolved config carries both, agreeing
            raise ValueError(
                f"effective_batch = {self.effective_batch} with batch_size = {self.batch_size} "
                f"means accumulate = {derived}, not {self.accumulate}: give one of the two"
            )
        self.accumulate = derived
        return self


class OptimSection(_Section):
    """``[optim]``: the optimizer and its hyper-parameters."""

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float | None = Field(None, gt=0.0)
    """Learning rate; default by optimizer: sgd 0.01, adam/adamw 0.001, rmsprop 0.01."""
    momentum: float = Field(0.0, ge=0.0)
    nesterov: bool = False
    weight_decay: float | None = Field(None, ge=0.0)
    """L2 penalty (decoupled for adamw); default 0.01 for adamw (PyTorch's), else 0."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's and AdamW's two decay rates, each in [0, 1)."""
    eps: float = Field(1e-8, gt=0.0)
    alpha: float = Field(0.99, gt=0.0)
    """RMSprop's smoothing constant."""

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        # torch.optim.Adam raises "Invalid beta parameter" for these, but only once the model
        # is built; NaN and inf are refused earlier, by allow_inf_nan
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("expected two numbers in [0, 1)")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> OptimSection:
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError('nesterov = true needs name = "sgd" and momentum > 0')
        # Defaults that depend on the optimizer are filled in here, so the resolved config
        # written to the run directory shows the values really used.
        if self.lr is None:
            self.lr = DEFAULT_LR[self.name]
        if self.weight_decay is None:
            self.weight_decay = 0.01 if self.name == "adamw" else 0.0
        return self


class CheckpointSection(_Section):
    """``[checkpoint]``: when checkpoints are written, how many are kept, which one is "best".

    A checkpoint is written every ``every`` ("epoch", or a number of optimizer steps) and at the
    end of fit; the newest ``keep`` are kept, plus the best by ``monitor``. A checkpoint competes
    for "best" only when the monitored value was measured on its own weights (at its step), so
    ``best`` always holds the weights that scored that value.
    """

    every: int | Literal["epoch", "never"] = "epoch"
    """``"epoch"``, a number of optimizer steps, or ``"never"`` (not even at the end)."""
    keep: int = Field(3, ge=1)
    """How many of the newest checkpoints to keep (the best one is kept besides)."""
    monitor: str | None = None
    """The metric that picks ``best``; default ``val_loss`` (``train_loss`` without validation)."""
    mode: Literal["auto", "min", "max"] = "auto"
    """``auto``: ``max`` for accuracies (``*_acc``), ``min`` for everything else."""
    policy: Literal["best", "grad_norm_peak"] = "best"
    """``"best"``: best by ``monitor``. ``"grad_norm_peak"``: the first checkpoint after the
    gradient norm has passed its peak and settled (see :mod:`gradstep.callbacks.grad_norm`)."""
    window: int = Field(5, ge=2)
    """grad_norm_peak: logged steps over which the norm must have fallen and settled."""
    fluctuation: float = Field(0.03, gt=0.0)
    """grad_norm_peak: largest relative spread ``(max - min) / mean`` of the norm in the window."""
    loss_ratio: float = Field(0.95, gt=0.0)
    """grad_norm_peak: the training loss must be below this fraction of its first logged value."""
    on_save_error: Literal["stop", "continue"] = "stop"
    """A failed save (disk full, permission denied): stop the run, or warn and go on."""

    @field_validator("every")
    @classmethod
    def _every(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1")
        return v


class ScheduleSection(_Section):
    """``[schedule]``: the learning rate over training (see :mod:`gradstep.optim`).

    ``interval`` is the unit every length below is counted in, and when the rate changes:
    after each optimizer ``"step"`` or at each ``"epoch"``'s end. ``plateau`` changes the rate
    whenever its monitored metric is measured (each validation, or each epoch's end for a
    ``train_*`` metric), whatever the interval.
    """

    name: Literal[
        "none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau"
    ] = "none"
    interval: Literal["step", "epoch"] = "epoch"
    step_size: int = Field(10, ge=1)
    """step: multiply by ``gamma`` every ``step_size`` intervals."""
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [30, 60, 90])
    """multistep: multiply by ``gamma`` at each of these intervals (positive counts)."""
    gamma: float = Field(0.1, gt=0.0)
    """step, multistep, exponential: the factor."""
    t_max: int | None = Field(None, ge=1)
    """cosine, warmup_cosine, onecycle: length in intervals; default: the whole run."""
    warmup: int | None = Field(None, ge=0)
    """warmup_cosine: intervals of linear warm-up from 0; default 5 % of ``t_max``."""
    eta_min: float = Field(0.0, ge=0.0)
    """cosine, warmup_cosine: the final learning rate."""
    max_lr: float | None = Field(None, gt=0.0)
    """onecycle: the peak learning rate; default ``[optim] lr``."""
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    """onecycle: share of the cycle spent rising."""
    div_factor: float = Field(25.0, gt=0.0)
    """onecycle: start at ``max_lr / div_factor``."""
    final_div_factor: float = Field(1e4, gt=0.0)
    """onecycle: end at ``max_lr / div_factor / final_div_factor``."""
    monitor: str | None = None
    """plateau: the metric watched; default ``val_loss`` (``train_loss`` without validation)."""
    mode: Literal["auto", "min", "max"] = "auto"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    """plateau: multiply by this when the metric stalls."""
    patience: int = Field(10, ge=0)
    """plateau: measurements without improvement before the rate is cut."""
    threshold: float = Field(1e-4, ge=0.0)
    """plateau: relative improvement that counts (PyTorch's ``threshold_mode = "rel"``)."""
    cooldown: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0.0)


class EarlyStopSection(_Section):
    """``[early_stop]``: stop when a metric has not improved for ``patience`` epochs; setting
    ``patience`` turns it on."""

    monitor: str | None = None
    """Any metric of the epoch records (``val_loss``, ``train_acc``, ``grad_norm``, ...);
    default ``val_loss`` (``train_loss`` without validation)."""
    mode: Literal["auto", "min", "max"] = "auto"
    patience: int | None = Field(None, ge=1)
    """Epochs without improvement before training stops; unset: no early stopping."""
    min_delta: float = Field(0.0, ge=0.0)
    """The least change that counts as an improvement."""
    restore_best: bool = True
    """Put the best weights back into the model at the end (after the final checkpoint, which
    keeps the true last state so a resume stays exact)."""


class HealthSection(_Section):
    """``[health]``: when the gradient norm counts as exploding or vanishing (reported in the log
    and ``summary.json``; the run goes on)."""

    explode_norm: float | None = Field(None, gt=0.0)
    """An absolute norm above which gradients count as exploding."""
    explode_factor: float = Field(10.0, gt=1.0)
    """Exploding: the median norm of the last ``window`` steps this many times the median of
    the ``window`` steps before them."""
    vanish_norm: float = Field(1e-6, ge=0.0)
    """Vanishing: a norm below this for ``window`` steps in a row."""
    window: int = Field(20, ge=2)


PLOTS_DEFAULT = True
"""``[log] plots``' default. The test suite turns it off (rendering costs ~0.3 s a run)."""


class LogSection(_Section):
    """``[log]``: what the run leaves to look at besides ``metrics.jsonl`` and the console."""

    plots: bool = Field(default_factory=lambda: PLOTS_DEFAULT)
    """Write ``plots/*.png`` at the end of fit (see :mod:`gradstep.logging.plots`)."""
    tensorboard: bool = True
    """Write TensorBoard scalars (``events.out.tfevents.*``) into the run directory."""
    diagnose: bool = True
    """Print the diagnosis at the end of fit (it is always stored in ``summary.json``)."""


class DistSection(_Section):
    """``[dist]``: several processes (``torchrun ... -m gradstep fit``; see :mod:`gradstep.dist`).
    Without torchrun (one process) none of it applies."""

    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """The process group's backend: ``"auto"`` is nccl on CUDA, gloo on the CPU."""
    timeout_s: float = Field(1800.0, gt=0.0, allow_inf_nan=False)
    """How long a collective waits for the other ranks before the job fails (seconds)."""


class Config(_Section):
    """A whole run's settings. Every field has a default; see each section's docstring."""

    run: RunSection = Field(default_factory=RunSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    early_stop: EarlyStopSection = Field(default_factory=EarlyStopSection)
    health: HealthSection = Field(default_factory=HealthSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    log: LogSection = Field(default_factory=LogSection)
    dist: DistSection = Field(default_factory=DistSection)


SECTIONS: dict[str, type[_Section]] = {
    "run": RunSection,
    "data": DataSection,
    "model": ModelSection,
    "train": TrainSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "early_stop": EarlyStopSection,
    "health": HealthSection,
    "checkpoint": CheckpointSection,
    "log": LogSection,
    "dist": DistSection,
}

# Flat keyword names of gs.Trainer(...) -> (section, key). A key's own name unless two sections
# share it or the name would read badly on its own.
_RENAMED = {
    ("run", "name"): "name",
    ("run", "dir"): "run_dir",
    ("data", "path"): "data_path",
    ("model", "name"): "model",
    ("model", "args"): "model_args",
    ("optim", "name"): "optimizer",
    ("checkpoint", "every"): "checkpoint_every",
    ("checkpoint", "keep"): "checkpoint_keep",
    ("checkpoint", "monitor"): "checkpoint_monitor",
    ("checkpoint", "mode"): "checkpoint_mode",
    ("checkpoint", "policy"): "checkpoint_policy",
    ("checkpoint", "window"): "peak_window",
    ("checkpoint", "fluctuation"): "peak_fluctuation",
    ("checkpoint", "loss_ratio"): "peak_loss_ratio",
    ("schedule", "name"): "schedule",
    ("schedule", "interval"): "schedule_interval",
    ("schedule", "monitor"): "schedule_monitor",
    ("schedule", "mode"): "schedule_mode",
    ("schedule", "patience"): "schedule_patience",
    ("schedule", "gamma"): "gamma",
    ("schedule", "factor"): "schedule_factor",
    ("schedule", "threshold"): "schedule_threshold",
    ("schedule", "cooldown"): "schedule_cooldown",
    ("early_stop", "monitor"): "early_stop_monitor",
    ("early_stop", "mode"): "early_stop_mode",
    ("early_stop", "patience"): "patience",
    ("early_stop", "min_delta"): "min_delta",
    ("early_stop", "restore_best"): "restore_best",
    ("health", "window"): "health_window",
    ("log", "diagnose"): "print_diagnosis",
}
FLAT_KEYS: dict[str, tuple[str, str]] = {}
for _section, _cls in SECTIONS.items():
    for _key in _cls.model_fields:
        FLAT_KEYS[_RENAMED.get((_section, _key), _key)] = (_section, _key)

# What a union-typed key expects, in words (pydantic's own message lists each branch).
_EXPECTED = {
    ("train", "batch_size"): 'a positive integer or "full"',
    ("train", "val_every"): '"epoch" or a positive number of steps',
    ("train", "progress"): 'true, false or "auto"',
    ("train", "max_steps"): "a positive integer",
    ("optim", "lr"): "a positive number",
    ("checkpoint", "every"): '"epoch", "never" or a positive number of steps',
    ("train", "effective_batch"): "a positive integer",
    ("schedule", "t_max"): "a positive integer",
    ("schedule", "warmup"): "a non-negative integer",
    ("early_stop", "patience"): "a positive integer",
    ("data", "n"): f"a number of samples from 1 to {MAX_SAMPLES:,}",
    ("run", "seed"): f"an integer in [0, 2**63) (0 to {MAX_SEED - 1})",
    ("optim", "betas"): "two finite numbers in [0, 1)",
    ("schedule", "milestones"): "a list of positive integers (intervals)",
    ("data", "normalize"): (
        "true, false, or [mean, std]: two numbers, or two lists of one number per feature "
        "(channel), each std positive"
    ),
    ("data", "features"): (
        "a list of CSV column names (or an integer: the random source's n_features)"
    ),
    ("data", "drop"): "a list of CSV column names",
    ("data", "input_key"): "a key (a string) or a position (an integer)",
    ("data", "target_key"): "a key (a string) or a position (an integer)",
}


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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def to_toml(cfg: Config) -> str:
    """The config as TOML with every key written out; unset optional keys appear as comments."""
    lines = ["# Resolved gradstep config: every key, defaults included.", ""]
    data = cfg.model_dump()
    for section, values in data.items():
        tables = {}
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (not set)")
            elif section == "model" and key == "args":
                tables[f"{section}.{key}"] = value
            else:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for name, table in tables.items():
            lines += ["", f"[{name}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)
