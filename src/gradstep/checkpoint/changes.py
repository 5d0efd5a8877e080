"""What a resume may change: ``gradstep resume RUN --set KEY=VALUE`` (or ``fit(resume=...)``
with other settings) either applies a change — and records it — or refuses it naming the key.

The resumed run's config (the run's ``config.toml`` with the overrides, or the Python settings)
is compared key by key with the config the checkpoint was written under. Each difference is:

* **changeable** (:data:`CHANGEABLE`): applied from the checkpoint's step on, and recorded as
  ``{"step": N, "key": "optim.lr", "from": 0.1, "to": 0.01}`` in ``summary.json``'s
  ``changes`` (kept in every later checkpoint, so later resumes keep the list);
* **part of the run's identity** (:func:`is_identity`: the model, the data, the batches, the
  seed): refused, unless ``--force`` (``force=True``), which resumes anyway, as it does for the
  resume fingerprint, and records the change with ``"forced": true``;
* **anything else**: refused, ``--force`` or not — what the checkpoint's state would silently
  override (the optimizer's hyper-parameters live in its state; a schedule's shape and the
  metric that picks ``best`` are fixed when a run starts; the loss is what the run optimises).

``run.name`` and ``run.dir`` say where the run is: a resume takes them from the run itself.

So ``config.toml`` never claims a value the run did not use: every value in it is either the
one the run was started with or one a recorded change applied from step N.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gradstep.checkpoint.files import CheckpointError
from gradstep.errors import UserError

CHANGEABLE: dict[str, str] = {
    "train.epochs": "trains to the new count (a finished run trains further)",
    "train.max_steps": "stops at the new step count (it must lie ahead of the checkpoint)",
    "train.log_every": "progress lines every that many steps",
    "train.val_every": "when validation runs",
    "train.progress": "the progress bar",
    "train.clip_norm": "gradient clipping from the next step",
    "train.clip_value": "gradient clamping from the next step",
    "train.grad_norm": "gradient-norm monitoring",
    "train.grad_norm_per_layer": "per-parameter gradient norms in the log",
    "train.on_nonfinite": "what a NaN/Inf step does",
    "train.on_oom": "what running out of memory does",
    "optim.lr": "the learning rate from the next step (a schedule's base rate)",
    "early_stop.patience": "epochs without improvement before stopping (unset: off)",
    "early_stop.min_delta": "the least improvement that counts",
    "checkpoint.every": "how often checkpoints are written",
    "checkpoint.keep": "how many are kept",
    "checkpoint.on_save_error": "what a failed save does",
    "health.explode_norm": "the exploding-gradient threshold",
    "health.explode_factor": "the exploding-gradient growth factor",
    "health.vanish_norm": "the vanishing-gradient threshold",
    "health.window": "the steps the health checks look at",
    "log.plots": "plots at the end of fit",
    "log.tensorboard": "TensorBoard scalars",
    "log.diagnose": "the diagnosis printed at the end",
    "run.device": "where training continues",
    "data.num_workers": "DataLoader workers of a generic Dataset",
    "data.download": "whether MNIST may be downloaded",
    "dist.backend": "the process group's backend",
    "dist.timeout_s": "how long a collective waits",
    "dist.max_restarts": "how often --nproc's agent restarts failed workers",
}
"""Keys a resume applies, and what each does from the checkpoint's step on."""

LOCATION = ("run.name", "run.dir")
IDENTITY = (
    "model.",
    "data.",
    "run.seed",
    "train.batch_size",
    "train.accumulate",
    "train.effective_batch",
    "train.drop_last",
    "train.shuffle",
)
LENGTH_SCHEDULES = ("cosine", "warmup_cosine", "onecycle")
"""Schedules whose length (``t_max``) defaults to the whole run."""

_WHY = {
    "model.": "the model is part of the run",
    "data.": "the data are part of the run",
    "run.seed": "the seed is part of the run",
    "train.loss": "the loss is part of the run",
    "train.label_smoothing": "the loss is part of the run",
    "train.": "the batches are part of the run",
    "optim.": "the optimizer's state holds it",
    "schedule.": "a schedule is fixed when the run starts",
    "early_stop.": "the best value so far was measured with the old one",
    "checkpoint.": "the best checkpoint so far was chosen with the old one",
}


def is_identity(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IDENTITY)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}`` (``model.args.*`` too)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def schedule_length(config: dict[str, Any], batches: int) -> int:
    """The intervals a schedule spans when ``t_max`` is unset: the run's steps (``interval =
    "step"``, at most ``max_steps``) or its epochs — as :class:`~gradstep.controls.Controls`
    computes it."""
    train, sc = config.get("train", {}), config.get("schedule", {})
    epochs = int(train.get("epochs", 1))
    if sc.get("interval") != "step":
        return epochs
    steps = -(-batches // int(train.get("accumulate", 1))) * epochs
    max_steps = train.get("max_steps")
    return min(steps, int(max_steps)) if max_steps is not None else steps


def resolved(config: dict[str, Any], batches: int) -> dict[str, Any]:
    """``config`` flattened, with a length schedule's unset ``t_max`` written as the length it
    means (a resume that keeps the length writes it out: the two must compare equal)."""
    flat = flatten(config)
    if flat.get("schedule.name") in LENGTH_SCHEDULES and flat.get("schedule.t_max") is None:
        flat["schedule.t_max"] = schedule_length(config, batches)
    return flat


def _shown(section_key: str, value: Any) -> str:
    section, _, key = section_key.partition(".")
    return f"[{section}] {key} = {value!r}"


def _reason(key: str) -> str:
    for prefix, why in _WHY.items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            if prefix != "train." or is_identity(key):
                return why
    return "a resume cannot change it"


def _check_progress(key: str, value: Any, progress: dict[str, Any], where: Path) -> None:
    """A new epochs / max_steps must lie ahead of where the checkpoint is."""
    epoch, step = int(progress.get("epoch", 0)), int(progress.get("global_step", 0))
    if key == "train.epochs" and isinstance(value, int) and value < epoch:
        raise UserError(
            f"{where}: {_shown(key, value)}: the run is already at epoch {epoch} (step {step})"
        )
    if key == "train.max_steps" and isinstance(value, int) and value <= step:
        raise UserError(
            f"{where}: {_shown(key, value)}: the run is already at step {step}; give a larger "
            "one, or leave it as it was"
        )


def previous_changes(saved: dict[str, Any], where: Path) -> list[dict[str, Any]]:
    """The changes earlier resumes recorded in the checkpoint (``ChangeLog``'s state),
    checked: a checkpoint is data."""
    state = saved.get("callbacks", {}).get("ChangeLog")
    if state is None:
        return []
    records = state.get("changes") if isinstance(state, dict) else None
    ok = isinstance(records, list) and all(
        isinstance(r, dict)
        and type(r.get("step")) is int
        and isinstance(r.get("key"), str)
        and {"from", "to"} <= r.keys()
        for r in records
    )
    if not ok:
        raise CheckpointError(
            f"{where}/state.json: callbacks.ChangeLog: expected a list of "
            '{"step", "key", "from", "to"} records'
        )
    return [dict(r) for r in records]  # type: ignore[union-attr]


def as_now(saved: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config as this version of gradstep reads it: keys added since the run
    was written get their defaults (what the older version did: ``[data] drop = []``), and old
    names their new ones (``[data] features = 5`` is ``n_features``), so a run written by an
    earlier version resumes without "changes" it never asked for. A config this version no
    longer accepts as a whole is still compared key by key, each missing key taken as its
    default."""
    from gradstep.config import Config

    try:
        return Config.model_validate(saved).model_dump()
    except Exception:
        pass
    merged = Config().model_dump()  # each section: its defaults, then what the run saved
    for section, keys in saved.items():
        if isinstance(keys, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **keys}
        else:
            merged[section] = keys
    data, given = merged.get("data"), saved.get("data")
    if isinstance(data, dict) and type(data.get("features")) is int:  # its old name
        count, data["features"] = data["features"], None
        if not (isinstance(given, dict) and "n_features" in given):
            data["n_features"] = count
    return merged


def resume_changes(
    saved: dict[str, Any],
    current: dict[str, Any],
    *,
    progress: dict[str, Any],
    batches: int,
    force: bool,
    where: Path,
) -> list[dict[str, Any]]:
    """The change records for resuming a checkpoint written under config ``saved`` with config
    ``current`` (both as ``Config.model_dump()`` gives them); raises :class:`UserError` naming
    every key that cannot change (see the module docstring)."""
    step = int(progress.get("global_step", 0))
    old = resolved(json.loads(_json(as_now(saved))), batches)
    new = resolved(json.loads(_json(current)), batches)
    records, refused = [], []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if key in LOCATION or _json(before) == _json(after):
            continue
        if key == "train.accumulate" and _derived(old, new):
            continue  # derived from effective_batch for this world size (the fingerprint checks)
        if isinstance(before, float) and isinstance(after, float):
            if math.isnan(before) and math.isnan(after):
                continue
        record: dict[str, Any] = {"step": step, "key": key, "from": before, "to": after}
        if key in CHANGEABLE:
            _check_progress(key, after, progress, where)
        elif is_identity(key) and force:
            record["forced"] = True
        else:
            hint = " (--force resumes anyway)" if is_identity(key) else ""
            refused.append(
                f"{_shown(key, after)}: the run has {before!r}, and {_reason(key)}{hint}"
            )
            continue
        records.append(record)
    if refused:
        raise UserError(
            f"{where}: cannot change on resume: {'; '.join(refused)}. A resume changes only "
            "epochs, max_steps, lr, logging, validation, checkpointing, early stopping's "
            "patience and min_delta, health, clipping and device settings (gradstep resume -h)"
        )
    return records


def _derived(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """``accumulate`` follows from ``effective_batch`` (the same in both) and the world size."""
    eff = old.get("train.effective_batch")
    return eff is not None and _json(eff) == _json(new.get("train.effective_batch"))


def describe(record: dict[str, Any]) -> str:
    """``optim.lr 0.1 -> 0.01 from step 30`` (``forced`` said)."""
    forced = " (forced)" if record.get("forced") else ""
    return (
        f"{record['key']} {record['from']!r} -> {record['to']!r} from step {record['step']}"
        + forced
    )
