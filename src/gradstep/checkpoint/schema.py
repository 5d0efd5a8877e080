"""The schema of a checkpoint's ``state.json``, checked whole before a resume uses any of it.

Why: the manifest proves integrity, not authorship — anyone can edit ``state.json`` and seal
the manifest again, and a checkpoint is data that may come from anywhere. Unchecked, a crafted
(or buggy) state fails deep inside the restore (a ``KeyError``, a ``binascii.Error``, a
``TypeError`` in a callback), often *after* the resume has renamed newer checkpoints aside, cut
``metrics.jsonl`` and rewritten ``config.toml``; or it is taken silently (a negative
``global_step`` trains on; a NumPy position past its key crashes the process).
:func:`check_state` runs where the checkpoint is chosen, before anything on disk changes: one
that fails is skipped like a corrupt one, or refused in one line when it was named.

Checked — whatever ``restore()``, ``load_optimizer_state``, ``set_rng_state``,
``TrainState.load_state_dict``, ``Meter.load_state_dict`` and the built-in callbacks'
``load_state_dict`` read — for type (strict: ``"3"`` is not 3, ``true`` is not 1), presence and
range:

* ``step``, ``epoch``, ``progress``: counters are integers in ``[0, 2**63)``;
  ``progress.global_step`` / ``epoch`` equal ``step`` / ``epoch`` (``newest_good`` matches
  ``step`` with the manifest's); ``epochs_completed <= epoch``; ``step_in_epoch <=
  global_step``; ``batch`` between ``step_in_epoch`` and ``step_in_epoch × accumulate``
  micro-batches, and at most ``batches_per_epoch`` when the caller knows it;
* ``meter`` (required while ``progress.in_epoch``): counts ``>= 0``, three running sums, sums
  only with samples and a count to divide by; ``train_metrics`` / ``val_metrics``: names to
  numbers; ``metrics_bytes``: ``>= 0`` or null;
* ``optimizer``: a class gradstep builds; groups whose ``params`` number the parameters ``0,
  1, ...`` in order (as ``optimizer.state_dict()`` does; loading pairs them with the live ones
  by that order); hyperparameters typed and in range, those ``step()`` reads present, the flags
  gradstep never sets at torch's defaults; non-tensor state only for parameters that exist;
* ``rng``: Python's (version 3, 625 words, the last an index ``<= 624``), NumPy's (``MT19937``,
  624 words, position in ``[0, 624]``), torch's CPU state (exactly ``torch.get_rng_state()``'s
  size), each CUDA device's (16 bytes) — and each put into a fresh generator of its kind, so a
  state the library refuses is found here, without touching the global generators;
* ``callbacks``: a JSON object per key; the built-in callbacks (keyed by class name, ``#2`` for
  a second one: ``callback_keys``) field by field; a user's own callback's state is theirs;
* ``history``: records of names to numbers, strings, booleans or null, with an ``epoch`` and a
  ``step``, the loop's own keys (``train_loss``, ``lr``, ...) numbers;
* ``ranks`` (DDP): each rank's ``rng`` and ``meter``, checked as the top-level ones;
* ``fingerprint`` / ``config``: JSON objects; nothing nested deeper than :data:`MAX_DEPTH`.

Keys this version does not know are ignored (a later one may add some within format version
1); keys earlier ones did not write take their defaults (``progress.micro_split``, the list
form of the gradient monitor's window). The safetensors files are outside this schema.

Example::

    check_state(ckpt.state(), ckpt.path)  # CheckpointError: one line naming the key
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import random
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from gradstep.checkpoint.files import CheckpointError

MAX_DEPTH = 100
"""The deepest nesting of lists and objects accepted anywhere in ``state.json`` (real ones are
under ten deep; far deeper ones make later ``json.dumps`` calls recurse out of the stack)."""

BUILTIN_CALLBACK = re.compile(r"^(GradMonitor|LRScheduler|EarlyStopping|Checkpointer)(#\d+)?$")
CUDA_STATE_BYTES = 16  # a CUDA generator's state: its seed and Philox offset, 8 bytes each
_PY_WORDS, _NP_WORDS = 625, 624  # Mersenne Twister: 624 words (+ Python's index)

INT64_MAX = 2**63 - 1  # counters go into int64 tensors and packed int64 windows
Count = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Number = StrictFloat  # strict: an int is a number, a bool or a string is not; NaN allowed
Rate = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Beta = Annotated[StrictFloat, Field(ge=0, lt=1)]


# fixed-length JSON arrays: tuples whose items stay strict (JSON has no tuples, so the array
# itself is read laxly, as a list)
Array = Field(strict=False)
PythonRng = Annotated[tuple[Literal[3], StrictStr, Number | None], Array]
NumpyRng = Annotated[
    tuple[
        Literal["MT19937"],
        StrictStr,
        Annotated[StrictInt, Field(ge=0, le=624)],
        Annotated[StrictInt, Field(ge=0, le=1)],
        Number,
    ],
    Array,
]
Sums = Annotated[tuple[Number, Rate, Rate], Array]  # loss x samples, metric sum, metric count
Betas = Annotated[tuple[Beta, Beta], Array]
EpochNorms = Annotated[tuple[Number, Number, Count], Array]  # sum, max, count


class _Obj(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# --- progress, running metrics, optimizer --------------------------------------------------


class Progress(_Obj):
    epoch: Count
    batch: Count
    step_in_epoch: Count
    global_step: Count
    samples_seen: Count
    epochs_completed: Count
    in_epoch: StrictBool
    should_stop: StrictBool
    stop_reason: StrictStr | None
    micro_split: Annotated[StrictInt, Field(ge=1, le=INT64_MAX)] = 1
    oom_events: list[dict[StrictStr, Count]] = []


class MeterState(_Obj):
    samples: Count
    total: Sums | None
    window: Number | None
    window_n: Count


class ParamGroup(_Obj):
    """A param group: every value loading puts into the live optimizer is typed (the defaults
    only stand for keys a class does not have: see :data:`REQUIRED_HYPER`)."""

    params: list[Count]
    lr: Rate
    momentum: Rate = 0.0
    dampening: Finite = 0.0
    weight_decay: Rate = 0.0
    eps: Rate = 0.0
    alpha: Rate = 0.0
    betas: Betas = (0.9, 0.999)
    initial_lr: Rate = 0.0
    nesterov: StrictBool = False  # the other flags keep torch's defaults: see default_flags


REQUIRED_HYPER: dict[str, tuple[str, ...]] = {
    "SGD": ("momentum", "dampening", "weight_decay", "nesterov"),
    "Adam": ("betas", "eps", "weight_decay", "amsgrad"),
    "AdamW": ("betas", "eps", "weight_decay", "amsgrad"),
    "RMSprop": ("alpha", "eps", "weight_decay", "momentum", "centered"),
}
"""What each optimizer gradstep builds reads in ``step()`` without a default."""
SET_BY_CONFIG = ("nesterov",)
"""The only flag ``[optim]`` sets; every other one (``amsgrad``, ``centered``, ``capturable``,
...) keeps torch's default in a run gradstep builds — and changing one under a loaded state
breaks ``step()`` (``amsgrad`` wants a ``max_exp_avg_sq`` the state does not hold,
``capturable`` wants a GPU)."""


@functools.cache
def default_flags(kind: str) -> dict[str, bool | None]:
    """The flags of ``torch.optim.<kind>`` (one of :data:`REQUIRED_HYPER`) and their defaults."""
    built = getattr(torch.optim, kind)([torch.zeros(1, requires_grad=True)], lr=1e-3)
    return {
        k: v
        for k, v in built.defaults.items()
        if (v is None or isinstance(v, bool)) and k not in SET_BY_CONFIG
    }


class OptimizerState(_Obj):
    kind: Literal["SGD", "Adam", "AdamW", "RMSprop"] = Field(alias="class")  # build_optimizer's
    param_groups: Annotated[list[ParamGroup], Field(min_length=1)]
    scalars: dict[StrictStr, dict[StrictStr, Any]] = {}


class RngState(_Obj):
    python: PythonRng
    numpy: NumpyRng
    torch: StrictStr
    cuda: list[StrictStr] | None = None


class Fingerprint(_Obj):
    accumulate: Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]


class RankPart(_Obj):  # one rank's own part under DDP (gradstep.checkpoint.ranks)
    rng: RngState
    meter: MeterState | None


class SavedState(_Obj):
    step: Count
    epoch: Count
    progress: Progress
    meter: MeterState | None
    train_metrics: dict[StrictStr, Number]
    val_metrics: dict[StrictStr, Number]
    optimizer: OptimizerState
    metrics_bytes: Count | None
    rng: RngState
    callbacks: dict[StrictStr, dict[StrictStr, Any]]
    history: list[dict[StrictStr, Any]]
    fingerprint: Fingerprint
    config: dict[StrictStr, Any]
    base_dir: StrictStr | None = None
    ranks: Annotated[list[RankPart], Field(min_length=1)] | None = None


# --- the built-in callbacks' states (their load_state_dict reads these) --------------------


class HealthEvent(_Obj):
    step: Count
    grad_norm: Number
    why: StrictStr


class GradMonitorState(_Obj):
    recent: Any = []  # packed {"steps", "norms"} or a list of [step, norm]: see _grad_window
    vanish_run: list[Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]] = []
    exploding: HealthEvent | None = None
    vanishing: HealthEvent | None = None
    nonfinite_step: Count | None = None
    nonfinite_reason: StrictStr | None = None
    skipped: list[Count] = []
    epoch: EpochNorms = (0.0, 0.0, 0)
    last: Number | None = None
    peak_median: Number | None = None


class ScheduleState(_Obj):
    t: Count
    base: list[Rate]
    lrs: list[Rate]
    best: Number | None = None
    num_bad: Count = 0
    cooldown_counter: Count = 0
    reductions: Count = 0


class EarlyStoppingState(_Obj):
    best: Number | None = None
    best_epoch: Count | None = None
    best_step: Count | None = None
    wait: Count = 0
    stopped_epoch: Count | None = None


class PeakState(_Obj):
    count: Count = 0
    last_step: Count | None = None
    first_loss: Number | None = None
    peak: Number | None = None
    peak_index: Annotated[StrictInt, Field(ge=-1, le=INT64_MAX)] = -1
    recent: list[Number] = []
    reached_step: Count | None = None
    reached_norm: Number | None = None


class CheckpointerState(_Obj):
    best_value: Number | None = None
    best_step: Count | None = None
    # relinked as ``best``: a sibling step directory, never a path elsewhere
    best_name: Annotated[StrictStr, Field(pattern=r"^step-[0-9]+$")] | None = None
    measured: dict[StrictStr, Count] = {}
    last_saved_step: Count | None = None
    peak: PeakState | None = None


CALLBACK_STATES: dict[str, type[_Obj]] = {
    "GradMonitor": GradMonitorState,
    "LRScheduler": ScheduleState,
    "EarlyStopping": EarlyStoppingState,
    "Checkpointer": CheckpointerState,
}

# the loop's own numbers in an epoch record (callbacks may add keys of their own)
_HISTORY_NUMBERS = {"lr", "time_s", "grad_norm", "grad_norm_max"} | {
    f"{p}_{m}" for p in ("train", "val") for m in ("loss", "acc", "mae")
}


# --- checking -------------------------------------------------------------------------------


class _Bad(Exception):
    """One finding: where (a key path) and what was expected instead."""

    def __init__(self, loc: Sequence[str | int], expected: str) -> None:
        super().__init__(expected)
        self.loc, self.expected = tuple(loc), expected


_MISSING = object()


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if isinstance(value, list | tuple) and len(text) > 40:
        return f"a list of {len(value)}"
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(loc: Sequence[str | int], expected: str, value: Any = _MISSING) -> _Bad:
    """``expected <what>[, got <value>]`` at ``loc``."""
    got = "" if value is _MISSING else f", got {_shown(value)}"
    return _Bad(loc, f"expected {expected}{got}")


def _missing(loc: Sequence[str | int], why: str = "a required key") -> _Bad:
    return _Bad(loc, f"missing ({why})")


def key_path(loc: Sequence[str | int]) -> str:
    """``("history", 0, "lr")`` -> ``history[0].lr``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a JSON object",
    "dict_type": "a JSON object",
    "list_type": "a list",
    "tuple_type": "a list",
    "greater_than_equal": "a value >= {ge}",
    "greater_than": "a value > {gt}",
    "less_than_equal": "a value <= {le}",
    "less_than": "a value < {lt}",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} item(s)",
    "literal_error": "{expected}",
    "string_pattern_mismatch": "a checkpoint name like step-000123",
}


def _expected(err: Any) -> str:
    """One pydantic error in this module's words: ``expected <what>, got <value>``."""
    kind, loc = err["type"], err["loc"] or ("",)
    if kind == "missing":
        return (
            f"missing ({'the list is too short' if isinstance(loc[-1], int) else 'a required key'})"
        )
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (err.get("ctx") or {}).items()}
    try:
        words = _WORDS[kind].format(**ctx)
    except (KeyError, IndexError):
        words = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
    return f"expected {words}, got {_shown(err['input'])}"


def _model(cls: type[_Obj], obj: Any, loc: Sequence[str | int] = ()) -> Any:
    """``cls.model_validate(obj)``, a failure as a :class:`_Bad` at ``loc`` + pydantic's loc."""
    try:
        return cls.model_validate(obj)
    except ValidationError as err:
        first = err.errors()[0]
        raise _Bad((*loc, *first["loc"]), _expected(first)) from None


def _depth_ok(obj: Any) -> None:
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(obj, ())]
    while stack:
        node, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            raise _bad(loc[:3], f"at most {MAX_DEPTH} levels of nesting")
        if isinstance(node, dict):
            stack.extend((v, (*loc, str(k))) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(node))


def _decode(text: str, loc: Sequence[str | int], size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(loc, "base64 text", text) from None
    if size is not None and len(raw) != size:
        raise _bad(loc, f"base64 of {size} bytes, got {len(raw)} bytes")
    return raw


def _rng(rng: RngState) -> None:
    """Decode every generator state and put it into a fresh generator of its kind: what
    ``set_rng_state`` will do, without touching the global generators."""
    version, mt, gauss = rng.python
    words = struct.unpack(f"<{_PY_WORDS}I", _decode(mt, ("rng", "python", 1), 4 * _PY_WORDS))
    if words[-1] > _NP_WORDS:
        raise _bad(("rng", "python", 1), f"a last word (the index) <= {_NP_WORDS}", words[-1])
    try:
        random.Random().setstate((version, words, gauss))
    except (ValueError, TypeError, OverflowError) as err:
        raise _bad(("rng", "python"), f"a state Python's random accepts ({err})") from None
    kind, keys, pos, has_gauss, cached = rng.numpy
    key = np.frombuffer(_decode(keys, ("rng", "numpy", 1), 4 * _NP_WORDS), dtype="<u4")
    try:
        np.random.RandomState(0).set_state((kind, key.astype(np.uint32), pos, has_gauss, cached))
    except (ValueError, TypeError, IndexError) as err:
        raise _bad(("rng", "numpy"), f"a state NumPy accepts ({err})") from None
    raw = _decode(rng.torch, ("rng", "torch"), torch.get_rng_state().numel())  # 5056 in 2.x
    try:
        torch.Generator().set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else "refused"
        raise _bad(("rng", "torch"), f"a CPU generator state torch accepts ({first})") from None
    for i, state in enumerate(rng.cuda or []):
        _decode(state, ("rng", "cuda", i), CUDA_STATE_BYTES)


def _optimizer(opt: OptimizerState, raw: dict[str, Any]) -> int:
    """Param groups and non-tensor state against what loading indexes; the parameter count."""
    n = 0
    for i, group in enumerate(opt.param_groups):
        loc = ("optimizer", "param_groups", i)
        if group.params != list(range(n, n + len(group.params))):
            raise _bad(
                (*loc, "params"),
                f"parameter indices {n}, {n + 1}, ... in order across groups "
                "(as optimizer.state_dict() numbers them)",
                group.params,
            )
        n += len(group.params)
        saved = raw["param_groups"][i]
        for key in REQUIRED_HYPER[opt.kind]:
            if key not in saved:
                raise _missing((*loc, key), f"{opt.kind}'s step() reads it")
        for key, default in default_flags(opt.kind).items():
            if key in saved and saved[key] != default:
                what = f"{json.dumps(default)} ({opt.kind}'s default: gradstep never sets it)"
                raise _bad((*loc, key), what, saved[key])
    for pid, values in opt.scalars.items():
        loc = ("optimizer", "scalars", pid)
        if not re.fullmatch(r"0|[1-9][0-9]*", pid) or int(pid) >= n:
            raise _bad(loc, f"the index of one of the optimizer's {n} parameters (0 to {n - 1})")
        step = values.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int | float) or not step >= 0:
            raise _bad((*loc, "step"), "a count of steps >= 0", step)
    return n


def _grad_window(recent: Any, loc: tuple[str | int, ...]) -> None:
    """The gradient monitor's window: packed (base64 of int64 steps and float64 norms, as many
    of each) or, as older checkpoints wrote it, a list of ``[step, norm]`` pairs."""
    if isinstance(recent, dict):
        sizes = []
        for name in ("steps", "norms"):
            if name not in recent:
                raise _missing((*loc, name))
            text = recent[name]
            if not isinstance(text, str):
                raise _bad((*loc, name), "base64 text", text)
            raw = _decode(text, (*loc, name))
            if len(raw) % 8:
                raise _bad((*loc, name), f"base64 of 8-byte values, got {len(raw)} bytes")
            sizes.append(len(raw))
        if sizes[0] != sizes[1]:
            raise _bad((*loc, "norms"), f"as many norms as steps ({sizes[0] // 8})")
        return
    if not isinstance(recent, list):
        raise _bad(loc, "a JSON object {steps, norms} or a list of [step, norm] pairs", recent)
    for i, pair in enumerate(recent):
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and type(pair[0]) is int and 0 <= pair[0] <= INT64_MAX
        ok = ok and type(pair[1]) in (int, float)
        if not ok:
            raise _bad((*loc, i), "a [step, norm] pair", pair)


def _callbacks(states: dict[str, dict[str, Any]], groups: int, step: int) -> None:
    for key, state in states.items():
        match = BUILTIN_CALLBACK.match(key)
        if match is None:
            continue  # a user's own callback: its state is theirs
        loc = ("callbacks", key)
        parsed = _model(CALLBACK_STATES[match.group(1)], state, loc)
        if isinstance(parsed, GradMonitorState):
            _grad_window(state.get("recent", []), (*loc, "recent"))
            if len(parsed.vanish_run) not in (0, 2):
                raise _bad((*loc, "vanish_run"), "[] or [first step, count]", parsed.vanish_run)
        elif isinstance(parsed, ScheduleState):
            if parsed.t > step:  # t counts steps or epochs done, and an epoch has steps
                raise _bad((*loc, "t"), f"at most progress.global_step ({step})", parsed.t)
            for name in ("base", "lrs"):
                if len(getattr(parsed, name)) != groups:
                    raise _bad(
                        (*loc, name),
                        f"one rate per optimizer param group ({groups})",
                        getattr(parsed, name),
                    )


def _history(history: list[dict[str, Any]]) -> None:
    for i, record in enumerate(history):
        for key, value in record.items():
            number = type(value) in (int, float)
            if key in _HISTORY_NUMBERS:
                if not number:
                    raise _bad(("history", i, key), "a number", value)
            elif key == "partial":
                if type(value) is not bool:
                    raise _bad(("history", i, key), "true or false", value)
            elif not (number or value is None or isinstance(value, str | bool)):
                raise _bad(("history", i, key), "a number, a string, true/false or null", value)
        for key, low in (("epoch", 1), ("step", 0)):
            if key not in record:
                raise _missing(("history", i, key))
            if type(record[key]) is not int or record[key] < low:
                raise _bad(("history", i, key), f"an integer >= {low}", record[key])


def _progress(s: SavedState, batches_per_epoch: int | None) -> None:
    p, acc = s.progress, s.fingerprint.accumulate
    if p.global_step != s.step:
        raise _bad(("progress", "global_step"), f"the checkpoint's step, {s.step}", p.global_step)
    if p.epoch != s.epoch:
        raise _bad(("progress", "epoch"), f"the checkpoint's epoch, {s.epoch}", p.epoch)
    if p.epochs_completed > p.epoch:
        done = p.epochs_completed
        raise _bad(("progress", "epochs_completed"), f"at most progress.epoch ({p.epoch})", done)
    if p.step_in_epoch > p.global_step:
        raise _bad(
            ("progress", "step_in_epoch"),
            f"at most progress.global_step ({p.global_step})",
            p.step_in_epoch,
        )
    if not p.step_in_epoch <= p.batch <= p.step_in_epoch * acc:
        raise _bad(
            ("progress", "batch"),
            f"{p.step_in_epoch} to {p.step_in_epoch * acc} micro-batches for "
            f"progress.step_in_epoch = {p.step_in_epoch} (each step takes 1 to "
            f"accumulate = {acc})",
            p.batch,
        )
    if batches_per_epoch is not None and p.batch > batches_per_epoch:
        raise _bad(("progress", "batch"), f"at most {batches_per_epoch} per epoch", p.batch)
    if p.in_epoch and p.epoch < 1:
        raise _bad(("progress", "epoch"), "a value >= 1 while progress.in_epoch", p.epoch)
    if p.in_epoch and s.meter is None:
        raise _bad(("meter",), "the epoch's running metrics (progress.in_epoch is true)", None)
    m = s.meter
    if m is not None:
        if m.window_n > m.samples:
            raise _bad(("meter", "window_n"), f"at most meter.samples ({m.samples})", m.window_n)
        if m.total is not None and (m.samples == 0 or m.total[2] <= 0):
            what = "null unless meter.samples and the metric count are > 0"
            raise _bad(("meter", "total"), what, list(m.total))


def check_state(
    saved: dict[str, Any], where: Path, *, batches_per_epoch: int | None = None
) -> None:
    """Check the whole of ``state.json`` (``saved``, of the checkpoint at ``where``) against
    the schema in this module's docstring; :class:`CheckpointError` names the first key that
    fails (``<where>: state.json: progress.global_step: expected a value >= 0, got -5``).

    ``batches_per_epoch``: the resuming run's, when known, to bound ``progress.batch``."""
    try:
        if not isinstance(saved, dict):
            raise _bad((), "a JSON object", saved)
        _depth_ok(saved)
        s = _model(SavedState, saved)
        _progress(s, batches_per_epoch)
        groups = len(s.optimizer.param_groups)
        _optimizer(s.optimizer, saved["optimizer"])
        _rng(s.rng)
        for part in s.ranks or ():
            _rng(part.rng)
        _callbacks(s.callbacks, groups, s.progress.global_step)
        _history(s.history)
    except _Bad as bad:
        where_key = f"state.json: {key_path(bad.loc)}" if bad.loc else "state.json"
        raise CheckpointError(f"{where}: {where_key}: {bad.expected}") from None
