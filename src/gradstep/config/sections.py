"""The config's sections and :class:`Config` itself, and the flat keyword names of
``gs.Trainer(...)`` (see :mod:`gradstep.config`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gradstep.config.base import DEFAULT_LR, MAX_RUN_NAME, MAX_SAMPLES, MAX_SEED, _Section
from gradstep.config.data import DataSection


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
        # a resolved config carries both, agreeing: accumulate = effective_batch / (batch_size
        # × processes) for the processes that wrote it (gradstep.dist.accumulate_per_world)
        if derived % self.accumulate:
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
    max_restarts: int = Field(0, ge=0, le=1000)
    """``gradstep fit --nproc N``: how many times torchrun's agent restarts the workers after
    one fails (each restart resumes from the newest checkpoint: see :mod:`gradstep.elastic`).
    Under your own ``torchrun`` it is torchrun's ``--max-restarts``."""


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
