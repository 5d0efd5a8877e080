"""A plain-language verdict on a run, drawn from its metrics: did it learn, overfit, blow up?

:func:`diagnose` reads what a run logged — the epoch records, the step lines, ``summary.json``'s
health section and the config — and returns a short list of :class:`Verdict`, each with its
evidence as numbers and one suggestion. ``gradstep diagnose RUN_DIR`` prints them, and
``Trainer.fit`` prints them at the end of every run and stores them in ``summary.json``
(``diagnosis``).

The rules, in the order they are checked (thresholds are module constants):

* **unstable** — a non-finite loss or gradient, skipped steps, exploding or vanishing gradients
  (from the gradient monitor), or loss spikes: a logged step loss above ``SPIKE`` (3) times the
  median of the ``SPIKE_WINDOW`` (10) logged losses before it.
* **overfitting** (needs validation) — validation loss ended more than ``OVERFIT_RISE`` (10 %)
  above its best, at least ``OVERFIT_EPOCHS`` (2) epochs after the best, while the training loss
  kept falling and sits well below it (validation more than ``OVERFIT_GAP``, 50 %, above it):
  train and validation are diverging. Names the epoch where validation stopped improving.
* **underfitting** — the training loss fell less than ``LEARNED`` (10 %) from its start (the
  first logged loss: the first step line, or the first epoch), or it was still falling steeply
  at the end: more than ``STEEP`` (3 %) in each of the last ``TAIL`` (3) epochs, which brought
  more than ``STEEP_SHARE`` (15 %) of the whole run's decrease. The model had more to learn
  than it was given.
* **batchnorm** — the model has BatchNorm and trains on tiny batches: a batch size under
  ``BN_SMALL`` (8), or an epoch's last batch that small (batch statistics from a few samples
  are noise; ``drop_last`` fixes it), or gradient accumulation (BN sees micro-batches).
* **healthy** — none of the above: says so, with the loss it reached.

Example::

    from gradstep.diagnose import diagnose_run, format_verdicts
    print(format_verdicts(diagnose_run("runs/mnist_simplenet")))
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradstep.errors import UserError

SPIKE = 3.0
SPIKE_WINDOW = 10
OVERFIT_RISE = 0.10
OVERFIT_EPOCHS = 2
OVERFIT_GAP = 0.5
LEARNED = 0.10
STEEP = 0.03
STEEP_SHARE = 0.15
TAIL = 3
BN_SMALL = 8


@dataclass
class Verdict:
    kind: str  # healthy | underfitting | overfitting | unstable | batchnorm
    title: str
    evidence: list[str] = field(default_factory=list)
    suggestion: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def _unstable(steps: list[dict], health: dict[str, Any]) -> Verdict | None:
    evidence = []
    if health.get("nonfinite_step") is not None:
        evidence.append(f"the loss or gradient became NaN/Inf at step {health['nonfinite_step']}")
    if health.get("skipped_steps"):
        evidence.append(f"{health['skipped_steps']} optimizer steps skipped as non-finite")
    for kind in ("exploding", "vanishing"):
        event = health.get(kind)
        if event:
            evidence.append(
                f"{kind} gradients from step {event['step']} (norm {event['grad_norm']:.3g}, "
                f"{event['why']})"
            )
    losses = [(s["step"], s["loss"]) for s in steps if isinstance(s.get("loss"), int | float)]
    spikes = []
    for i in range(3, len(losses)):
        before = _finite([v for _, v in losses[max(0, i - SPIKE_WINDOW) : i]])
        if len(before) < 3 or not math.isfinite(losses[i][1]):
            continue
        median = statistics.median(before)
        if median > 0 and losses[i][1] > SPIKE * median:
            spikes.append((losses[i][0], median, losses[i][1]))
    if spikes:
        step, median, value = max(spikes, key=lambda s: s[2] / s[1])
        evidence.append(
            f"{len(spikes)} loss spike(s): the largest at step {step}, {value:.4g} against a "
            f"median of {median:.4g} just before ({value / median:.1f}x)"
        )
    if not evidence:
        return None
    return Verdict(
        "unstable",
        "unstable training",
        evidence,
        "lower the learning rate (÷3 to ÷10), or clip gradients ([train] clip_norm = 1.0); "
        'a warm-up schedule ([schedule] name = "warmup_cosine") helps large rates start',
    )


def _overfitting(history: list[dict], early_stop: dict[str, Any]) -> Verdict | None:
    full = [h for h in history if not h.get("partial")]
    val = [(h["epoch"], h["val_loss"]) for h in full if isinstance(h.get("val_loss"), float)]
    val = [(e, v) for e, v in val if math.isfinite(v)]
    if len(val) < 3:
        return None
    best_epoch, best = min(val, key=lambda ev: ev[1])
    last_epoch, last = val[-1]
    train = {h["epoch"]: h.get("train_loss") for h in full}
    t_best, t_last = train.get(best_epoch), train.get(last_epoch)
    if t_best is None or t_last is None or not (math.isfinite(t_best) and math.isfinite(t_last)):
        return None
    rising = best > 0 and last > best * (1 + OVERFIT_RISE)
    gap = last > t_last * (1 + OVERFIT_GAP)
    if not (rising and gap and last_epoch - best_epoch >= OVERFIT_EPOCHS and t_last < t_best):
        return None
    evidence = [
        f"val_loss was best at epoch {best_epoch} ({best:.4g}) and ended at {last:.4g} "
        f"(+{_pct(last / best - 1)}) by epoch {last_epoch}",
        f"train_loss kept falling meanwhile: {t_best:.4g} -> {t_last:.4g}",
    ]
    accs = [(h.get("train_acc"), h.get("val_acc")) for h in full if h["epoch"] == last_epoch]
    if accs and all(isinstance(a, float) for a in accs[0]):
        tr, va = accs[0]
        evidence.append(f"final train_acc {tr:.1%} against val_acc {va:.1%}")
    keep = (
        f"keep the weights of epoch {best_epoch} ([early_stop] patience = 3 with restore_best, "
        "or the best checkpoint)"
    )
    if early_stop.get("restored_best") and early_stop.get("best_epoch") == best_epoch:
        evidence.append(f"early stopping put the weights of epoch {best_epoch} back at the end")
        keep = f"the returned model has epoch {best_epoch}'s weights, the ones to use"
    return Verdict(
        "overfitting",
        f"overfitting: validation stopped improving at epoch {best_epoch}",
        evidence,
        f"{keep}; to generalise better, regularise: weight_decay, dropout, or more data",
    )


def _underfitting(history: list[dict], steps: list[dict]) -> Verdict | None:
    full = [h for h in history if not h.get("partial")]
    train = _finite([h.get("train_loss") for h in full])
    if not train:
        return None
    first_logged = _finite([s.get("loss") for s in steps[:1]])
    start = first_logged[0] if first_logged else train[0]
    end = train[-1]
    evidence, why = [], ""
    measured_twice = bool(first_logged) or len(train) > 1  # else start and end are one value
    if measured_twice and start > 0 and end > start * (1 - LEARNED):
        evidence.append(
            f"train_loss fell only {_pct(max(0.0, 1 - end / start))}: {start:.4g} -> {end:.4g}"
        )
        why = "the model barely learned"
    if len(train) > TAIL:
        tail = train[-TAIL - 1 :]
        drops = [(a - b) / a for a, b in itertools.pairwise(tail) if a > 0]
        share = (tail[0] - tail[-1]) / (start - end) if start > end else 0.0
        if drops and min(drops) > STEEP and share > STEEP_SHARE:
            evidence.append(
                f"train_loss was still falling {_pct(statistics.mean(drops))} per epoch over "
                f"the last {TAIL} epochs ({tail[0]:.4g} -> {tail[-1]:.4g})"
            )
            why = why or "training stopped while the loss was still falling steeply"
    if not evidence:
        return None
    val = _finite([h.get("val_loss") for h in full])
    if val:
        evidence.append(f"val_loss {val[0]:.4g} -> {val[-1]:.4g}")
    return Verdict(
        "underfitting",
        f"underfitting: {why}",
        evidence,
        "train longer (more epochs) or raise the learning rate (x3 to x10); if the loss is "
        "stuck from the start, check the data and labels, then try a larger model",
    )


def _batchnorm(summary: dict[str, Any], config: dict[str, Any]) -> Verdict | None:
    if not summary.get("model", {}).get("batchnorm"):
        return None
    train_cfg = config.get("train", {})
    data = summary.get("data", {})
    batch = data.get("batch_size") or train_cfg.get("batch_size")
    n = data.get("train_samples")
    evidence = []
    if isinstance(batch, int) and batch < BN_SMALL:
        evidence.append(
            f"batch_size {batch}: BatchNorm's batch statistics come from {batch} samples"
        )
    if isinstance(batch, int) and isinstance(n, int) and not train_cfg.get("drop_last"):
        last = n % batch
        if 0 < last < min(BN_SMALL, batch):
            evidence.append(
                f"the last batch of every epoch has {last} sample(s) ({n} samples, batch {batch}): "
                "BatchNorm normalises it with statistics from those alone"
            )
    if train_cfg.get("accumulate", 1) > 1 and data.get("batches_per_epoch", 2) > 1:
        evidence.append(
            f"accumulate {train_cfg['accumulate']}: BatchNorm sees micro-batches of {batch}, "
            "not the effective batch"
        )
    if not evidence:
        return None
    return Verdict(
        "batchnorm",
        "BatchNorm on small batches",
        evidence,
        "use batches of at least 16 (or [train] drop_last = true for a tiny last batch); "
        "for small batches, GroupNorm or LayerNorm does not depend on the batch",
    )


def _healthy(history: list[dict], steps: list[dict]) -> Verdict:
    train = _finite([h.get("train_loss") for h in history])
    first = _finite([s.get("loss") for s in steps[:1]]) or train[:1]
    evidence = []
    if train and first:
        evidence.append(f"train_loss {first[0]:.4g} -> {train[-1]:.4g}, flattening at the end")
    last = history[-1] if history else {}
    for key in ("val_loss", "val_acc", "val_mae"):
        if isinstance(last.get(key), float):
            evidence.append(
                f"final {key} {last[key]:.1%}"
                if key == "val_acc"
                else f"final {key} {last[key]:.4g}"
            )
    return Verdict(
        "healthy",
        "healthy: the loss fell and settled, and validation followed",
        evidence,
        "nothing to fix; to go further, try a larger model or more data",
    )


def diagnose(
    history: list[dict[str, Any]],
    steps: list[dict[str, Any]] | None = None,
    summary: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> list[Verdict]:
    """Verdicts for a run from its epoch records (``history``), step lines, summary and config.
    A run with no problem gets one ``healthy`` verdict."""
    steps, summary, config = steps or [], summary or {}, config or {}
    if not history:
        return [Verdict("unknown", "no complete epoch to judge", [], "train at least one epoch")]
    found = [
        _unstable(steps, summary.get("health") or {}),
        _overfitting(history, summary.get("early_stop") or {}),
    ]
    if found[1] is None:
        found.append(_underfitting(history, steps))
    found.append(_batchnorm(summary, config))
    verdicts = [v for v in found if v is not None]
    return verdicts or [_healthy(history, steps)]


def read_metrics(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The records of a ``metrics.jsonl``, by kind: ``{"step": [...], "val": [...], "epoch":
    [...]}``. A malformed line is a :class:`UserError` naming the file and line."""
    out: dict[str, list[dict[str, Any]]] = {"step": [], "val": [], "epoch": []}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if isinstance(record, dict) and record.get("kind") in out:
            out[record["kind"]].append(record)
    return out


def read_run(run_dir: str | Path) -> tuple[list[dict], list[dict], dict, dict]:
    """``(epoch records, step lines, summary, config)`` of a run directory."""
    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{run}: not a run directory (no metrics.jsonl)")
    records = read_metrics(metrics)
    summary: dict[str, Any] = {}
    if (run / "summary.json").is_file():
        try:
            summary = json.loads((run / "summary.json").read_text())
        except ValueError:
            raise UserError(f"{run / 'summary.json'}: not valid JSON") from None
    config: dict[str, Any] = {}
    if (run / "config.toml").is_file():
        try:
            config = tomllib.loads((run / "config.toml").read_text())
        except tomllib.TOMLDecodeError:
            raise UserError(f"{run / 'config.toml'}: not valid TOML") from None
    return records["epoch"], records["step"], summary, config


def diagnose_fit(
    history: list[dict[str, Any]],
    summary: dict[str, Any],
    config: dict[str, Any],
    run_dir: Path | None,
    warn: Callable[[str], None],
) -> list[Verdict]:
    """The end-of-fit diagnosis: the trainer's in-memory history and summary, and the whole
    run's step lines from ``metrics.jsonl`` (resumes included). It never fails the run: a
    problem here is a warning."""
    if not history:
        return []
    try:
        steps: list[dict[str, Any]] = []
        if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
            steps = read_metrics(run_dir / "metrics.jsonl")["step"]
        return diagnose(history, steps, summary, config)
    except Exception as err:  # a finished run must not be lost to its diagnosis
        warn(f"diagnosis failed: {type(err).__name__}: {err}")
        return []


def diagnose_run(run_dir: str | Path) -> list[Verdict]:
    return diagnose(*read_run(run_dir))


def format_verdicts(verdicts: list[Verdict]) -> str:
    """Plain text: one block per verdict — title, evidence, suggestion."""
    lines = ["Diagnosis:"]
    for v in verdicts:
        lines.append(f"  {v.title}")
        lines += [f"    - {e}" for e in v.evidence]
        if v.suggestion:
            lines.append(f"    suggestion: {v.suggestion}")
    return "\n".join(lines)
