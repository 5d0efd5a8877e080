"""The gradient between ``backward()`` and ``optimizer.step()``: its norm, clipping, non-finite
values, and whether it is exploding or vanishing.

:class:`GradMonitor` is called by the loop right before each optimizer step
(:meth:`GradMonitor.before_step`) and as a callback at the usual hooks. Per step it only launches
``torch._foreach_norm`` over the gradients (one call; no host sync) and keeps the per-parameter
norms on the device. At each log line, epoch end and checkpoint it reads the steps gathered since
the last read in one sync (:meth:`GradMonitor.flush`), and then:

* logs ``grad_norm`` — the global L2 norm of all gradients *before* clipping, as
  ``torch.nn.utils.clip_grad_norm_`` computes it — on the step line (and ``grad_norm/<param>``
  for each parameter with ``grad_norm_per_layer = true``), and the epoch's mean and max on the
  epoch record;
* checks gradient health: **exploding** when a norm is above ``[health] explode_norm``, or when
  the median norm of the last ``window`` (20) steps is ``explode_factor`` (10) times the median
  of the ``window`` steps before them and above any window median the run had before —
  sustained growth to a level never seen, not one noisy batch, nor a near-converged model's tiny
  norms returning to ordinary ones (it began at the first step of the window above that level;
  checked every ``window // 4`` steps);
  **vanishing** when the norm stays below ``vanish_norm`` for ``window`` steps in a row. The
  first step of each is warned about once and kept in ``summary.json`` (``health``); the run
  goes on;
* with ``on_nonfinite = "fail"``, finds the first step whose gradient norm is NaN or Inf and
  stops the run there, naming it (the trainer then raises
  :class:`~gradstep.errors.NonFiniteError`). This costs no per-step sync, so the run stops at the
  next log line, epoch end or checkpoint; checkpoints read the monitor first, so none is written
  after a non-finite step (and the checkpoint snapshot refuses non-finite tensors besides).

``on_nonfinite = "skip"`` must decide before each step, which takes one host sync per step
(cheap on a CPU, a pipeline stall on a GPU): the step is skipped when the loss or the gradient
norm is not finite — the weights and optimizer state stay bit-identical, the gradients are
dropped, the step still counts (its samples were used) — and the skipped steps are counted in
``summary.json``.

Clipping (``clip_norm``, ``clip_value``) happens here too, after the norm is taken: the logged
norm is the one before clipping, as in Lightning's and the HF Trainer's logs.
"""

from __future__ import annotations

import base64
import math
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradstep import dist
from gradstep.callbacks.base import Callback
from gradstep.state import TrainState

MAX_PENDING = 256  # steps kept on the device before a read, whatever log_every is


class GradMonitor(Callback):
    """Args: ``model``; ``grad_norm`` (log the norm); ``per_layer``; ``clip_norm``,
    ``clip_value``; ``on_nonfinite`` (``"fail"`` or ``"skip"``); the ``[health]`` thresholds
    ``explode_norm``, ``explode_factor``, ``vanish_norm``, ``window``; ``log_every``; ``warn``."""

    def __init__(
        self,
        model: nn.Module,
        *,
        grad_norm: bool = True,
        per_layer: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        on_nonfinite: str = "fail",
        explode_norm: float | None = None,
        explode_factor: float = 10.0,
        vanish_norm: float = 1e-6,
        window: int = 20,
        log_every: int = 50,
        warn: Callable[[str], None] = print,
    ) -> None:
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.all_names = [n for n, _ in self.named]
        self.grad_norm, self.per_layer = grad_norm, per_layer
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.skip = on_nonfinite == "skip"
        self.explode_norm, self.explode_factor = explode_norm, explode_factor
        self.vanish_norm, self.window = vanish_norm, window
        self.log_every = log_every
        self.warn = warn
        self.active = grad_norm or clip_norm is not None or clip_value is not None or self.skip
        self._plain = grad_norm and clip_norm is None and clip_value is None and not self.skip
        """Whether :meth:`before_step` has work to do (the loop skips the call when not)."""
        self._pending: list[tuple[int, list[torch.Tensor]]] = []
        self._names: list[str] = []
        self._last_layers: dict[str, float] = {}
        # saved state (checkpoints)
        self.recent: deque[tuple[int, float]] = deque(maxlen=2 * window)
        self.vanish_run: list[float] = []  # [first step, count] of the current run below
        self.exploding: dict[str, Any] | None = None
        self.vanishing: dict[str, Any] | None = None
        self.nonfinite_step: int | None = None
        self.skipped: list[int] = []
        self.epoch_sum, self.epoch_max, self.epoch_n = 0.0, 0.0, 0
        self.last: float | None = None
        self.peak_median: float | None = None
        self.nonfinite_reason: str | None = None

    # --- called by the loop ---------------------------------------------------------------

    def before_step(self, state: TrainState, done: list[tuple[torch.Tensor, ...]]) -> bool:
        """After backward, before ``optimizer.step()``: measure, clip, check. False: skip it."""
        if self._plain:  # monitoring only, the default: one foreach call, nothing else
            try:
                norms = torch._foreach_norm([p.grad for p in self.params])
            except TypeError:  # a parameter without a gradient this step
                return self._before_step(state, done)
            if self._names is not self.all_names:
                self.flush(state)
                self._names = self.all_names
            self._pending.append((state.global_step + 1, norms))
            if len(self._pending) >= MAX_PENDING:
                self.flush(state)
            return True
        return self._before_step(state, done)

    def _before_step(self, state: TrainState, done: list[tuple[torch.Tensor, ...]]) -> bool:
        params = self.params
        grads = [p.grad for p in params]
        if any(g is None for g in grads):  # rare: parameters unused this step
            kept = [(n, p) for n, p in self.named if p.grad is not None]
            if not kept:
                return True
            names, params = [n for n, _ in kept], [p for _, p in kept]
            grads = [p.grad for p in params]
        else:
            names = self.all_names
        step = state.global_step + 1  # the step about to happen
        norms = (
            torch._foreach_norm(grads) if (self.grad_norm or self.clip_norm or self.skip) else []
        )
        total = None
        if self.clip_norm is not None or self.skip:
            total = torch.linalg.vector_norm(torch.stack(norms))
        if self.skip:
            finite = torch.isfinite(total)
            if done:  # (a rank's empty share of the last block has no loss)
                losses = torch.stack([loss.detach() for loss, *_ in done])
                finite = finite & torch.isfinite(losses).all()
            if dist.distributed():  # the losses are each rank's own: every rank skips alike
                flag = finite.to(dist.collective_device(), torch.int32).reshape(1)
                finite = dist.all_reduce_min(flag)
            if not finite.item():  # sync: the decision is needed before the step (documented)
                self.skipped.append(step)
                return False
        if self.clip_norm is not None:
            # clip_grad_norm_ scales by min(1, max_norm / (norm + 1e-6)). On the CPU reading the
            # norm is free, and the scaling is skipped when that factor is 1 (bit-identical
            # result); on an accelerator it always runs, so there is no host sync.
            if total.device.type != "cpu" or float(total) + 1e-6 > self.clip_norm:
                torch.nn.utils.clip_grads_with_norm_(params, self.clip_norm, total, foreach=True)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.clip_value, foreach=True)
        if norms:
            if names is not self._names and names != self._names:
                self.flush(state)
                self._names = names
            self._pending.append((step, norms))
            if len(self._pending) >= MAX_PENDING:
                self.flush(state)
        return True

    # --- reading and judging --------------------------------------------------------------

    def flush(self, state: TrainState) -> None:
        """Read the steps gathered since the last call (one host sync) and judge them."""
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        if self._pending[0][1]:
            flat = torch.stack([t for _, norms in self._pending for t in norms])
            per_param = flat.view(len(steps), -1).double()
            totals = torch.linalg.vector_norm(per_param, dim=1)
            if self.per_layer:
                rows = torch.cat([totals.unsqueeze(1), per_param[-1:].T], dim=0).flatten()
                values = rows.tolist()  # the one sync
                totals_list = values[: len(steps)]
                self._last_layers = dict(zip(self._names, values[len(steps) :], strict=True))
            else:
                totals_list = totals.tolist()  # the one sync
        else:
            totals_list = []
        self._pending = []
        self._judge_many(steps, totals_list, state)

    def _judge(self, step: int, norm: float, state: TrainState) -> None:
        self._judge_many([step], [norm], state)

    def _judge_many(self, steps: list[int], norms: list[float], state: TrainState) -> None:
        """The health rules over the steps read at once. The growth rule is checked at windows
        ending every ``window // 4`` steps (a per-step check of two running medians cost more
        than the norms themselves; sustained growth lasts a window anyway)."""
        if not steps:
            return
        self.last = norms[-1]
        if not all(map(math.isfinite, norms)):
            k = next(i for i, n in enumerate(norms) if not math.isfinite(n))
            if self.nonfinite_step is None:
                self._nonfinite(state, steps[k], f"non-finite gradient at step {steps[k]}")
            steps, norms = steps[:k], norms[:k]  # what came after is not judged
            if not steps:
                return
        self.epoch_sum += sum(norms)
        self.epoch_max = max(self.epoch_max, max(norms))
        self.epoch_n += len(norms)
        if self.exploding is None and self.explode_norm is not None:
            i = next((i for i, n in enumerate(norms) if n > self.explode_norm), None)
            if i is not None:
                why = f"above explode_norm = {self.explode_norm}"
                self._found("exploding", steps[i], norms[i], why)
        w = self.window
        old = len(self.recent)
        all_steps = [s for s, _ in self.recent] + steps
        all_norms = [n for _, n in self.recent] + norms
        if self.exploding is None and len(all_norms) >= 2 * w:
            stride = max(1, w // 4)
            ends = list(range(max(2 * w - 1, old), len(all_norms), stride))
            if ends and ends[-1] != len(all_norms) - 1:
                ends.append(len(all_norms) - 1)
            for end in ends:
                now = sorted(all_norms[end - w + 1 : end + 1])[w // 2]
                before = sorted(all_norms[end - 2 * w + 1 : end - w + 1])[w // 2]
                highest = max(self.peak_median or before, before)
                self.peak_median = max(highest, now)
                # growth from a tiny late-training norm back to an ordinary one is no explosion:
                # the new level must also pass every median the run has had before
                if before > 0 and now > self.explode_factor * before and now > highest:
                    began = next(
                        all_steps[i]
                        for i in range(end - w + 1, end + 1)
                        if all_norms[i] > self.explode_factor * before
                    )
                    why = f"the median over {w} steps grew {now / before:.1f}x, from {before:.3g}"
                    self._found("exploding", began, now, why)
                    break
        self.recent.extend(zip(steps[-2 * w :], norms[-2 * w :], strict=True))
        if self.vanishing is None or self.vanish_run:
            for step, norm in zip(steps, norms, strict=True):
                if norm < self.vanish_norm:
                    if not self.vanish_run:
                        self.vanish_run = [step, 0]
                    self.vanish_run[1] += 1
                    if self.vanishing is None and self.vanish_run[1] >= w:
                        why = f"below vanish_norm = {self.vanish_norm:g} for {w} steps"
                        self._found("vanishing", int(self.vanish_run[0]), norm, why)
                elif self.vanish_run:
                    self.vanish_run = []

    def _nonfinite(self, state: TrainState, step: int, reason: str) -> None:
        """Stop the run for a non-finite step; this reason wins over any given before it (a
        run that also reached max_steps at that moment failed all the same)."""
        self.nonfinite_step = step
        self.nonfinite_reason = reason
        state.should_stop, state.stop_reason = True, reason

    def safe_to_save(self, state: TrainState) -> bool:
        """Read what is pending; False once a non-finite step has been seen (the checkpointer
        then writes nothing: the weights after it are not to be kept)."""
        self.flush(state)
        return self.nonfinite_step is None

    def _found(self, kind: str, step: int, norm: float, why: str) -> None:
        event = {"step": step, "grad_norm": norm, "why": why}
        setattr(self, kind, event)
        self.warn(f"{kind} gradients from step {step}: norm {norm:.4g}, {why}")

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``health``."""
        return {
            "exploding": self.exploding,
            "vanishing": self.vanishing,
            "nonfinite_step": self.nonfinite_step,
            "skipped_steps": len(self.skipped),
            "first_skipped": self.skipped[:10],
            "last_grad_norm": self.last,
        }

    # --- hooks ----------------------------------------------------------------------------

    def on_step_end(self, state: TrainState) -> None:
        if state.step_in_epoch % self.log_every == 0:
            self.flush(state)
            if self.grad_norm and self.last is not None:
                state.log_values["grad_norm"] = self.last
                for name, value in self._last_layers.items():
                    state.log_values[f"grad_norm/{name}"] = value

    def on_epoch_end(self, state: TrainState) -> None:
        self.flush(state)
        record = state.history[-1]
        if self.grad_norm and self.epoch_n:
            record["grad_norm"] = self.epoch_sum / self.epoch_n
            record["grad_norm_max"] = self.epoch_max
        loss = record.get("train_loss")
        if loss is not None and not math.isfinite(loss) and self.nonfinite_step is None:
            self._nonfinite(state, state.global_step, f"non-finite loss in epoch {state.epoch}")
        self.epoch_sum, self.epoch_max, self.epoch_n = 0.0, 0.0, 0

    def on_fit_end(self, state: TrainState) -> None:
        self.flush(state)

    def state_dict(self) -> dict[str, Any]:
        steps = [s for s, _ in self.recent]
        return {
            # packed (exact, NaN included): 40 floats written by JSON cost a checkpoint ~0.1 ms
            "recent": {
                "steps": base64.b64encode(struct.pack(f"<{len(steps)}q", *steps)).decode(),
                "norms": base64.b64encode(
                    struct.pack(f"<{len(steps)}d", *(n for _, n in self.recent))
                ).decode(),
            },
            "vanish_run": list(self.vanish_run),
            "exploding": self.exploding,
            "vanishing": self.vanishing,
            "nonfinite_step": self.nonfinite_step,
            "nonfinite_reason": self.nonfinite_reason,
            "skipped": list(self.skipped),
            "epoch": [self.epoch_sum, self.epoch_max, self.epoch_n],
            "last": self.last,
            "peak_median": self.peak_median,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        recent = state.get("recent", [])
        if isinstance(recent, dict):  # packed (see state_dict); a list of pairs before
            steps = base64.b64decode(recent["steps"])
            norms = base64.b64decode(recent["norms"])
            recent = zip(
                struct.unpack(f"<{len(steps) // 8}q", steps),
                struct.unpack(f"<{len(norms) // 8}d", norms),
                strict=True,
            )
        self.recent = deque((tuple(r) for r in recent), maxlen=2 * self.window)
        self.vanish_run = list(state.get("vanish_run", []))
        self.exploding = state.get("exploding")
        self.vanishing = state.get("vanishing")
        self.nonfinite_step = state.get("nonfinite_step")
        self.nonfinite_reason = state.get("nonfinite_reason")
        self.skipped = list(state.get("skipped", []))
        self.epoch_sum, self.epoch_max, self.epoch_n = state.get("epoch", [0.0, 0.0, 0])
        self.last = state.get("last")
        self.peak_median = state.get("peak_median")


# --- the grad_norm_peak checkpoint policy ------------------------------------------------------


def settled_after_peak(
    norms: list[float],
    losses: list[float],
    window: int = 5,
    fluctuation: float = 0.03,
    loss_ratio: float = 0.95,
) -> int | None:
    """The first index ``i`` of a logged series at which the ``grad_norm_peak`` rule holds:

    * the gradient norm has passed its peak: the ``window`` logged norms ending at ``i`` all
      come after the largest norm logged up to ``i`` (and are below it);
    * it has settled: over those ``window`` values the relative spread
      ``(max - min) / mean`` is under ``fluctuation``;
    * the model has learned: the training loss at ``i`` is below ``loss_ratio`` times the first
      logged loss.

    Why: early in training the gradient norm typically climbs while the loss falls fastest,
    peaks, and then comes down and flattens as the model settles into a basin. The first
    checkpoint after that settling is a stable model that has left its initial phase — a
    sensible "best" when there is no validation metric to trust, and an early one (later
    checkpoints mostly refine it or start to overfit). The loss condition keeps a run whose
    norm only decays from the start, without learning, from qualifying. Returns None if the
    rule never holds.

    Example::

        settled_after_peak([1, 4, 9, 6, 5.0, 5.05, 5.02, 5.01, 5.0], [2.3] + [1.0] * 8)  # 8
    """
    peak_i, peak = -1, -math.inf
    for i, (norm, loss) in enumerate(zip(norms, losses, strict=True)):
        if not math.isfinite(norm):
            continue
        if norm > peak:
            peak_i, peak = i, norm
        start = i - window + 1
        if start <= peak_i:
            continue
        span = norms[start : i + 1]
        if not all(math.isfinite(v) for v in span):
            continue
        mean = sum(span) / window
        if mean <= 0 or (max(span) - min(span)) / mean >= fluctuation or max(span) >= peak:
            continue
        if math.isfinite(loss) and loss < loss_ratio * losses[0]:
            return i
    return None


class GradNormPeak:
    """The ``grad_norm_peak`` policy's memory, fed each logged ``(step, grad_norm, loss)``: the
    step at which :func:`settled_after_peak`'s rule first held, worked out incrementally (the
    rule at a point depends only on what came before it, so checking each new point as it
    arrives gives the same answer) and with bounded state — the first loss, the peak, and the
    last ``window`` norms. The checkpointer makes the first checkpoint at or after that step
    ``best``."""

    def __init__(self, window: int = 5, fluctuation: float = 0.03, loss_ratio: float = 0.95):
        self.window, self.fluctuation, self.loss_ratio = window, fluctuation, loss_ratio
        self.count = 0
        self.last_step: int | None = None
        self.first_loss: float | None = None
        self.peak, self.peak_index = -math.inf, -1
        self.recent: list[float] = []
        self.reached_step: int | None = None
        self.reached_norm: float | None = None

    def observe(self, step: int, norm: float, loss: float) -> None:
        if self.reached_step is not None or (self.last_step is not None and step <= self.last_step):
            return
        i, self.last_step = self.count, step
        self.count += 1
        if self.first_loss is None:
            self.first_loss = loss
        if math.isfinite(norm) and norm > self.peak:
            self.peak, self.peak_index = norm, i
        self.recent = [*self.recent, norm][-self.window :]
        if i - self.window + 1 <= self.peak_index or not all(map(math.isfinite, self.recent)):
            return
        mean = sum(self.recent) / self.window
        if mean <= 0 or (max(self.recent) - min(self.recent)) / mean >= self.fluctuation:
            return
        if max(self.recent) >= self.peak:
            return
        if math.isfinite(loss) and loss < self.loss_ratio * self.first_loss:
            self.reached_step, self.reached_norm = step, norm

    def describe(self) -> str:
        if self.reached_step is None:
            return "the gradient norm has not passed its peak and settled yet"
        return f"the gradient norm passed its peak and settled at step {self.reached_step}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "last_step": self.last_step,
            "first_loss": self.first_loss,
            "peak": self.peak if math.isfinite(self.peak) else None,
            "peak_index": self.peak_index,
            "recent": list(self.recent),
            "reached_step": self.reached_step,
            "reached_norm": self.reached_norm,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))
        self.last_step = state.get("last_step")
        self.first_loss = state.get("first_loss")
        peak = state.get("peak")
        self.peak = -math.inf if peak is None else float(peak)
        self.peak_index = int(state.get("peak_index", -1))
        self.recent = list(state.get("recent", []))
        self.reached_step = state.get("reached_step")
        self.reached_norm = state.get("reached_norm")
