"""Exact resume: pick the newest good checkpoint, refuse a mismatched run, restore everything.

A resumed run finishes bit-identical (on CPU) to the same run never interrupted, because the
checkpoint holds, at a step boundary: weights and buffers, the optimizer's state, the progress
counters (epoch, micro-batch in the epoch, global step), the epoch's running train metrics, the
history, every callback's ``state_dict``, every RNG, and the length of ``metrics.jsonl`` at that
moment (the file is cut back to it, so lines logged after the checkpoint by the run that died are
not duplicated). The data order is a pure function of ``(seed, epoch)``, so no sample is replayed
or skipped: the epoch's permutation is drawn again and entered at the saved micro-batch.

Refusal: a checkpoint written by a run with another model, model arguments, batch size,
accumulation, seed, data order or data (a SHA-256 fingerprint of the training samples) is refused
with a message naming what differs, unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from gradstep.checkpoint.files import CheckpointError, read_tensors, remove_stale_tmp
from gradstep.checkpoint.load import Checkpoint, load_weights, newest_good, open_checkpoint
from gradstep.checkpoint.writer import point, step_dirs


def data_fingerprint(data: Any) -> str:
    """SHA-256 of in-memory training data (features and targets); for a Dataset, its type,
    length and first and last samples (hashing a whole Dataset would cost an epoch)."""
    h = hashlib.sha256()
    if isinstance(data, tuple):
        for t in data:
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()
    ds = data.dataset if isinstance(data, DataLoader) else data
    n = len(ds)
    h.update(f"{type(ds).__qualname__}:{n}".encode())
    for i in {0, n - 1} if n else ():
        sample = ds[i]  # read once: a Dataset's __getitem__ may cost a file read
        for part in sample if isinstance(sample, tuple | list) else (sample,):
            h.update(repr(torch.as_tensor(part).tolist()).encode())
    return h.hexdigest()


def describe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"batch_size: 32 in the checkpoint, 64 now"`` for each key that differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            if key == "data":
                out.append("data: the training data differ (another file, split or content)")
            else:
                out.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def find_resume_checkpoint(target: Path, warn: Any) -> tuple[Checkpoint | None, Path]:
    """The checkpoint to resume from (None: the run has none that verifies) and its run directory.

    ``target`` is a run directory (its newest checkpoint that verifies; corrupt or partial ones
    are skipped with a warning; a run with checkpoints none of which verifies is an error) or
    one checkpoint directory (that one, or an error). Changes nothing on disk: a killed run's
    stale ``.tmp-*`` directories are removed by :meth:`ResumePlan.prepare`, under the run's
    lock (they may be the live writes of a run that is still going).
    """
    run_dir = target
    if (target / "manifest.json").is_file() or target.name in ("best", "latest"):
        ckpt = open_checkpoint(target)
        from gradstep.checkpoint.schema import check_state

        check_state(ckpt.state(), ckpt.path)  # before anything on disk changes
        folder = ckpt.path.resolve().parent
        run_dir = folder.parent
        if folder.name != "checkpoints" or not (run_dir / "config.toml").is_file():
            raise CheckpointError(
                f"{target}: not a checkpoint inside a run directory (RUN/checkpoints/step-N); "
                "resume continues a run in its own directory"
            )
    else:
        if not (target / "config.toml").is_file():
            if not target.exists():
                raise CheckpointError(f"{target}: no such run directory")
            open_checkpoint(target)  # a pickle or stray file gets its clear refusal here
            raise CheckpointError(f"{target}: not a run directory (no config.toml)")
        folder = target / "checkpoints"
        if folder.is_symlink():  # the run's own checkpoints, never another run's
            raise CheckpointError(f"{folder}: a symlink; a run's checkpoints are its own")
        found, skipped = newest_good(folder)
        for line in skipped:
            warn(line)
        if found is None and skipped:  # some exist but none verifies: never clobber them
            raise CheckpointError(
                f"{target}: no checkpoint verifies ({skipped[0].removeprefix('skipped ')}); "
                "nothing was changed"
            )
        return found, run_dir
    return ckpt, run_dir


def orphan_newer(folder: Path, step: int, warn: Any) -> None:
    """Rename checkpoints in ``folder`` newer than ``step`` to ``step-NNNNNN.orphaned-*``, so that
    ``latest`` and pruning never mistake a corrupt one, or one from an abandoned timeline, for
    this run's."""
    for s, p in step_dirs(folder):
        if s > step:
            aside = p.with_name(f"{p.name}.orphaned-{secrets.token_hex(3)}")
            os.rename(p, aside)
            warn(f"{p.name} is newer than the checkpoint resumed from; renamed {aside.name}")


def truncate_metrics(path: Path, size: int | None) -> None:
    """Cut ``metrics.jsonl`` back to what it held when the checkpoint was taken."""
    if size is not None and path.is_file() and path.stat().st_size > size:
        with path.open("r+b") as f:
            f.truncate(size)


def relink(ckpt: Checkpoint, best_name: str | None) -> None:
    folder = ckpt.path.resolve().parent
    point(folder, "latest", ckpt.path.resolve().name)
    if best_name and (folder / best_name).is_dir():
        point(folder, "best", best_name)


def load_into(
    ckpt: Checkpoint, saved: dict[str, Any], model: torch.nn.Module, optimizer: Any
) -> None:
    """Weights and optimizer state into the built model and optimizer: what can fail (shapes,
    another optimizer), checked before anything on disk changes."""
    from gradstep.checkpoint.content import load_optimizer_state

    load_weights(model, ckpt)
    kind = saved.get("optimizer", {}).get("class")
    if kind is not None and kind != type(optimizer).__name__:
        raise CheckpointError(
            f"{ckpt.path}: written with optimizer {kind}, this run uses {type(optimizer).__name__}"
        )
    try:
        load_optimizer_state(optimizer, ckpt.optimizer_tensors(), saved["optimizer"])
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{ckpt.path}: optimizer state does not fit: {err}") from None


def restore(
    saved: dict[str, Any],
    *,
    state: Any,
    callbacks: list[Any],
    device: torch.device,
    new_meter: Any,
    tensor_states: dict[str, torch.Tensor] | None = None,
    rebatch: bool = False,
) -> None:
    """Put the rest of the checkpoint's training state into the built run: progress, the
    epoch's running metrics (this rank's: see :mod:`gradstep.checkpoint.ranks`), history,
    callback states (RNG comes last, separately). ``rebatch``: the checkpoint's micro-batch
    (``batch_size × world_size``) is not this run's, the samples per step are."""
    from gradstep import dist
    from gradstep.checkpoint.ranks import own_part

    accumulate = state.accumulate
    state.load_state_dict(saved["progress"])
    if rebatch and state.in_epoch:
        # another block of batch_size × world samples (same samples per step): mid-epoch every
        # step took `accumulate` blocks, so the position in the epoch is steps × the new count
        state.batch = min(state.step_in_epoch * accumulate, state.batches_per_epoch)
    state.history = list(saved.get("history", []))
    state.train_metrics = dict(saved.get("train_metrics", {}))
    state.val_metrics = dict(saved.get("val_metrics", {}))
    if state.in_epoch:
        state.train_meter = new_meter()
        meter, _ = own_part(saved, rank=dist.rank(), world=dist.world_size())
        state.train_meter.load_state_dict(meter, device)
    states = saved.get("callbacks", {})
    tensors = tensor_states or {}
    for key, cb in callback_keys(callbacks).items():
        if key in states:
            cb.load_state_dict(states[key])
        if hasattr(cb, "load_tensor_state_dict"):
            prefix = f"{key}/"
            cb.load_tensor_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )


def callback_keys(callbacks: list[Any]) -> dict[str, Any]:
    """A stable key per callback: its class name, numbered when a class appears twice."""
    keys: dict[str, Any] = {}
    for cb in callbacks:
        base = type(cb).__qualname__
        key, i = base, 2
        while key in keys:
            key, i = f"{base}#{i}", i + 1
        keys[key] = cb
    return keys


def reopen(state: Any, callbacks: list[Any]) -> None:
    """Let a restored run that stopped go on when the reason no longer holds: a signal
    interrupted it (``stop_reason = "interrupted"``, never finished); ``max_steps`` was
    raised; or early stopping stopped it and now would not (its patience raised past the
    epochs it waited, or early stopping turned off)."""
    from gradstep.callbacks.early_stopping import EarlyStopping

    reason = state.stop_reason or ""
    if reason == "interrupted" and not state.should_stop:
        state.stop_reason = None
    elif reason == "max_steps" and (state.max_steps is None or state.global_step < state.max_steps):
        state.should_stop, state.stop_reason = False, None
    elif state.should_stop and reason.startswith("early stopping"):
        stoppers = [cb for cb in callbacks if isinstance(cb, EarlyStopping)]
        if all(s.wait < s.patience for s in stoppers):
            state.should_stop, state.stop_reason = False, None
            for s in stoppers:
                s.stopped_epoch = None


@dataclass
class ResumePlan:
    """A resume, decided before anything is written: the checkpoint (None: the run has none
    that verifies and starts again) and the run directory it belongs to.

    The trainer calls :meth:`load_into` as soon as model and optimizer exist (what can fail does,
    before anything is written), :meth:`settle` to decide what the resumed config changes (or
    refuse it), :meth:`prepare` once it holds the run's lock and starts writing (main process
    only), :meth:`restore` once the run is built, and :meth:`reseed` last, right before the loop.
    """

    ckpt: Checkpoint | None
    run_dir: Path
    saved: dict[str, Any]
    changes: list[dict[str, Any]] = field(default_factory=list)
    """Every config change of the run's resumes: earlier ones (from the checkpoint), then
    this one's (see :meth:`settle`)."""
    new_changes: list[dict[str, Any]] = field(default_factory=list)
    rebatch: bool = False
    """The checkpoint's micro-batch (``batch_size × world_size``) is not this run's; the
    samples per step are (see :func:`gradstep.checkpoint.ranks.reshaped`)."""

    @classmethod
    def find(cls, target: Path, fingerprint: dict[str, Any], force: bool, warn: Any) -> ResumePlan:
        return cls.check(find_resume_checkpoint(target, warn), fingerprint, force, warn)

    @classmethod
    def check(
        cls,
        found: tuple[Checkpoint | None, Path],
        fingerprint: dict[str, Any],
        force: bool,
        warn: Any,
        batches_per_epoch: int | None = None,
    ) -> ResumePlan:
        """The plan for what :func:`find_resume_checkpoint` found, refused when the checkpoint
        was written by a different run (unless ``force``) or its position lies beyond this
        run's epoch (``batches_per_epoch``)."""
        ckpt, run_dir = found
        if ckpt is None:
            warn(
                f"{run_dir}: no checkpoint that verifies (killed before its first was written?); "
                "the run starts again from the beginning, in the same directory"
            )
            return cls(None, run_dir, {"metrics_bytes": 0})
        saved = ckpt.state()
        from gradstep.checkpoint.ranks import block_of, reshaped
        from gradstep.checkpoint.schema import check_state

        recorded = saved.get("fingerprint") if isinstance(saved, dict) else None
        same_block = isinstance(recorded, dict) and block_of(recorded) == block_of(fingerprint)
        # the position is bounded by this run's epoch when its blocks are the checkpoint's
        check_state(saved, ckpt.path, batches_per_epoch=batches_per_epoch if same_block else None)
        old, new, effective = reshaped(saved["fingerprint"], fingerprint)
        differences = describe_differences(old, new)
        if effective is not None:
            differences.insert(0, effective)
        if differences and not force:
            raise CheckpointError(
                f"{ckpt.path}: written by a different run ({'; '.join(differences)}); resume with "
                "the same settings, or force it (--force, or fit(..., force=True))"
            )
        plan = cls(ckpt, run_dir, saved)
        plan.rebatch = not differences and not same_block
        if batches_per_epoch is not None and plan.rebatch:  # the position in this run's blocks
            p = saved["progress"]
            acc = int(fingerprint.get("accumulate", 1))
            at = (p["step_in_epoch"] - 1) * acc + 1  # the step's first block (the last: partial)
            if p["in_epoch"] and at > batches_per_epoch:
                raise CheckpointError(
                    f"{ckpt.path}: state.json: progress.step_in_epoch: step {p['step_in_epoch']} "
                    f"of the epoch lies beyond this run's {batches_per_epoch} micro-batches"
                )
        return plan

    def load_into(self, model: torch.nn.Module, optimizer: Any) -> None:
        """Weights and optimizer state (see :func:`load_into`), and a check that the weights
        callbacks keep (early stopping's best) fit the model; call before :meth:`prepare`."""
        if self.ckpt is None:
            return
        load_into(self.ckpt, self.saved, model, optimizer)
        if self.ckpt.has("callbacks.safetensors"):
            from gradstep.checkpoint.load import weights_mismatch

            where = self.ckpt.listed("callbacks.safetensors")
            own = model.state_dict()
            kept: dict[str, dict[str, torch.Tensor]] = {}
            for key, t in read_tensors(where).items():
                owner, _, name = key.partition("/")
                kept.setdefault(owner, {})[name] = t
            for owner, tensors in kept.items():
                if owner.partition("#")[0] == "EarlyStopping":
                    why = weights_mismatch(own, tensors)
                    if why is not None:
                        raise CheckpointError(f"{where}: {owner}'s best weights: {why}")

    def settle(
        self, cfg: Any, controls: Any, *, force: bool, batches: int, warn: Any
    ) -> list[dict[str, Any]]:
        """Fit the resumed run's config ``cfg`` to the run it continues, before anything is
        written: ``run.name`` / ``run.dir`` are the run's own; a length schedule keeps its
        length (:meth:`Controls.keep_schedule_length`); and every other difference from the
        checkpoint's config is a recorded change or refused (see
        :mod:`gradstep.checkpoint.changes`). Returns :attr:`changes`."""
        from gradstep.checkpoint.changes import previous_changes, resume_changes

        cfg.run.name = self.run_dir.name
        saved = self.saved.get("config")
        if self.ckpt is None or not isinstance(saved, dict):
            return []  # a run starting again uses its config from step 0: nothing changes
        where = self.ckpt.path
        earlier = previous_changes(self.saved, where)
        run = saved.get("run")
        if isinstance(run, dict) and isinstance(run.get("dir"), str) and run["dir"]:
            cfg.run.dir = run["dir"]
        if self.rebatch:  # the saved config's micro-batches: the same steps, other blocks
            steps = -(-batches // cfg.train.accumulate)
            batches = steps * int(self.saved["fingerprint"].get("accumulate", 1))
        controls.keep_schedule_length(saved, batches, warn)
        self.new_changes = resume_changes(
            saved,
            cfg.model_dump(),
            progress=self.saved["progress"],
            batches=batches,
            force=force,
            where=self.run_dir,
        )
        self.changes = [*earlier, *self.new_changes]
        return self.changes

    def changed(self, key: str) -> bool:
        """Whether this resume changes ``key`` (``"optim.lr"``)."""
        return any(c["key"] == key for c in self.new_changes)

    def prepare(self, config_toml: str, warn: Any) -> Path:
        """Set the run directory up for the continued run; return it."""
        from gradstep.rundir import write_atomic

        step = self.ckpt.step if self.ckpt is not None else 0
        remove_stale_tmp(self.run_dir / "checkpoints")  # a killed run's half-written directories
        orphan_newer(self.run_dir / "checkpoints", step, warn)
        write_atomic(self.run_dir / "config.toml", config_toml)
        truncate_metrics(self.run_dir / "metrics.jsonl", self.saved.get("metrics_bytes", 0))
        return self.run_dir

    def restore(self, *, checkpointer: Any, say: Any, **parts: Any) -> dict[str, Any]:
        """Restore the training state into the built run (see :func:`restore`); return the
        ``resumed_from`` record for ``summary.json``."""
        if self.ckpt is None:
            return {"checkpoint": None, "step": 0}
        has = self.ckpt.has("callbacks.safetensors")
        tensors = read_tensors(self.ckpt.listed("callbacks.safetensors")) if has else None
        restore(self.saved, tensor_states=tensors, rebatch=self.rebatch, **parts)
        if checkpointer is not None and checkpointer.writer is not None:  # the writing rank
            relink(self.ckpt, checkpointer.best_name)
        state = parts["state"]
        where = (
            f"epoch {state.epoch}, after batch {state.batch}/{state.batches_per_epoch}"
            if state.in_epoch
            else f"the end of epoch {state.epoch}"
        )
        say(f"  resumed from {self.ckpt.path.name} (step {state.global_step}, {where})")
        from gradstep.checkpoint.changes import describe

        for change in self.new_changes:
            say(f"  changed: {describe(change)}")
        reopen(state, parts["callbacks"])
        if state.should_stop or (not state.in_epoch and state.epoch >= state.epochs):
            say(
                f"  the run had already finished ({state.stop_reason or 'completed'}); "
                "raise [train] epochs or max_steps to train further"
            )
        return {"checkpoint": str(self.ckpt.path.resolve()), "step": self.ckpt.step}

    def reseed(self) -> None:
        """Every RNG as the checkpoint left it: last, so nothing draws before the loop."""
        if self.ckpt is not None:
            from gradstep import dist
            from gradstep.checkpoint.content import set_rng_state
            from gradstep.checkpoint.ranks import own_part

            set_rng_state(own_part(self.saved, rank=dist.rank(), world=dist.world_size())[1])
