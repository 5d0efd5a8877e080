"""The files of one checkpoint of a run, taken at a step boundary (see :mod:`gradstep.checkpoint`).

:class:`RunSnapshot` knows the run's fixed parts — the model's constructor name and args, the
preprocessing, the resolved config, the resume fingerprint — and, called with the live
:class:`~gradstep.state.TrainState`, copies the changing parts: weights, optimizer, progress,
running metrics, history, callback states, RNG states, and the length of ``metrics.jsonl``.
JSON is encoded here, on the training thread, so a callback whose ``state_dict`` is not JSON fails
at once with its name rather than later in the writer.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradstep.checkpoint.content import RngCapture, optimizer_state
from gradstep.checkpoint.encoding import encode_tensors, tensors_to_bytes
from gradstep.checkpoint.files import json_bytes
from gradstep.checkpoint.ranks import summed_meter
from gradstep.checkpoint.resume import callback_keys
from gradstep.checkpoint.writer import Job
from gradstep.errors import NonFiniteError, UserError
from gradstep.state import TrainState


def normalizer_json(normalizer: Any) -> dict[str, Any] | None:
    if normalizer is None:
        return None
    out = {}
    for key, t in normalizer.state_dict().items():
        out[key] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        out[key]["values"] = t.flatten().tolist()  # float32 -> float -> float32 is exact
    return out


def normalizer_from_json(obj: dict[str, Any] | None) -> Any:
    from gradstep.data import Normalizer

    if obj is None:
        return None
    tensors = {
        key: torch.tensor(v["values"], dtype=getattr(torch, v["dtype"])).reshape(v["shape"])
        for key, v in obj.items()
    }
    return Normalizer.from_state_dict(tensors)


def model_info(
    *,
    name: str,
    args: dict[str, Any],
    base_dir: Path | None,
    task: str,
    loss: str,
    sample_shape: tuple[int, ...],
    outputs: int,
    normalizer: Any,
    source: str,
    target: str,
    features: list[str] | tuple[str, ...] | None = None,
    pixels: bool = False,
    input_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """``model.json``: what rebuilding the model and preparing its input need.

    ``input`` says how raw input becomes what the network takes (see
    :func:`gradstep.inference.prepare_input`): ``sample_shape``; ``features``, the CSV feature
    columns' names in training order (predict and eval pick them by name); ``pixels``, whether
    the training input was 8-bit pixels divided by ``uint8_divisor`` (then integer pixel arrays
    are scaled the same way); ``range``, the training input's ``[min, max]`` before
    normalisation (a float image in 0-255 where training saw [0, 1] is warned about)."""
    return {
        "name": name,
        "args": args,
        "base_dir": str(base_dir) if base_dir is not None else None,
        "task": task,
        "loss": loss,
        "outputs": outputs,
        "input": {
            "sample_shape": list(sample_shape),
            "source": source,
            "target": target,
            "uint8_divisor": 255,  # uint8 pixels are divided as the MNIST source divides them
            "features": list(features) if features else None,
            "pixels": bool(pixels),
            "range": list(input_range) if input_range is not None else None,
        },
        "normalize": normalizer_json(normalizer),
    }


def refuse_nonfinite(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    opt_tensors: dict[str, torch.Tensor],
    step: int,
) -> None:
    """No checkpoint holds a NaN anywhere, or an Inf outside a buffer (a causal mask's -inf is
    fine): the same rule loading applies. Each tensor's ``aminmax`` (NaN propagates into both;
    exact, unlike a sum, and the fastest check measured: ~30 us for the MNIST example's 8
    tensors, against ~400 us for ``isfinite().all()`` or an inf-norm) and one host sync."""
    params = {name for name, _ in model.named_parameters()}
    labels, ends = [], []
    for kind, tensors in (("weight", weights), ("optimizer state", opt_tensors)):
        for name, t in tensors.items():
            if t.is_floating_point() and t.numel():
                buffer = kind == "weight" and name not in params
                labels.append((f"{kind} {name}", buffer))
                ends.extend(torch.aminmax(t.detach()))
    if not labels:
        return
    if any(e.dtype != ends[0].dtype for e in ends):  # mixed precisions: compare in float64
        ends = [e.to(torch.float64) for e in ends]
    values = torch.stack(ends).tolist()  # the one sync
    for i, (label, buffer) in enumerate(labels):
        low, high = values[2 * i], values[2 * i + 1]
        bad = math.isnan(low) or math.isnan(high)
        if not buffer:
            bad = bad or math.isinf(low) or math.isinf(high)
        if bad:
            raise NonFiniteError(
                f"step {step}: {label} is not finite (NaN or Inf); no checkpoint was written"
            )


def all_finite(runs: list[tuple[torch.dtype, torch.Tensor]]) -> bool:
    """True when every floating run (of :func:`~gradstep.checkpoint.encoding.encode_tensors`: a
    view over the encoded bytes of adjacent tensors of one dtype) is finite; False means "look
    closer" (:func:`refuse_nonfinite` names the tensor and lets a buffer's ``-inf`` pass), as
    does a floating run the encoder could only view as bytes (not aligned for its dtype).

    One sum per run (one for a plain model's weights): a NaN or an infinity anywhere makes the
    sum NaN or infinite; so can finite values whose sum overflows, which only sends the check
    to the exact per-tensor one. The cheapest exact-enough test measured on the training thread
    (half an ``aminmax``'s time, a tenth of ``isfinite().all()``). Integer tensors (a
    BatchNorm's ``num_batches_tracked``) are never read as floats."""
    for dtype, view in runs:
        if dtype.is_floating_point:
            if view.dtype != dtype:
                return False
            total = view.sum() if dtype.itemsize >= 4 else view.sum(dtype=torch.float32)
            if not math.isfinite(total.item()):
                return False
    return True


@dataclass
class RunSnapshot:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    info: dict[str, Any]
    fingerprint: dict[str, Any]
    config: dict[str, Any]
    base_dir: Path | None
    metrics_path: Path | None
    callbacks: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        # fixed for the run: encoded once
        self._info_bytes = json_bytes(self.info, indent=1)
        self._fixed_json = ", ".join(
            f"{json.dumps(k)}: {json.dumps(v)}"
            for k, v in (
                ("fingerprint", self.fingerprint),
                ("config", self.config),
                ("base_dir", str(self.base_dir) if self.base_dir is not None else None),
            )
        )
        self._history: list[tuple[dict[str, Any], str]] = []  # (epoch record, its JSON)
        self._rng = RngCapture()  # every generator's state, re-encoded only when it changed

    def _history_json(self, history: list[dict[str, Any]]) -> str:
        """The history as JSON, re-encoding only the last record. Encoding floats is the slow
        part of ``state.json`` and the history grows by one record an epoch, so encoding it
        whole at every checkpoint would cost time quadratic in the epochs. Records before the
        last are final (callbacks complete only the newest one, at its epoch's end); a history
        replaced or cut (a resume) is noticed by identity and encoded afresh."""
        done = self._history
        final = len(history) - 1
        if len(done) > final or any(history[i] is not rec for i, (rec, _) in enumerate(done)):
            done.clear()
        for i in range(len(done), final):
            done.append((history[i], json.dumps(history[i])))
        parts = [text for _, text in done]
        if history:
            parts.append(json.dumps(history[-1]))
        return "[" + ", ".join(parts) + "]"

    def __call__(self, state: TrainState, job: Job, ranks: list[str] | None = None) -> Job:
        """The files of the checkpoint ``job`` names. ``ranks``: under DDP, every rank's part
        as JSON (:meth:`~gradstep.checkpoint.ranks.RankParts.gather`): saved as ``"ranks"``,
        with rank 0's generators and the ranks' summed running metrics at the top level."""
        opt_tensors, opt_meta = optimizer_state(self.optimizer)
        weights = self.model.state_dict()
        # serialised here, on the training thread: safetensors' bytes are the snapshot (one
        # copy), and the writer thread then runs no torch op at all (one that did would start a
        # second OpenMP team competing with training for the cores)
        encoded_weights, encoded_opt = encode_tensors(weights), encode_tensors(opt_tensors)
        weight_bytes, opt_bytes = encoded_weights.data, encoded_opt.data
        on_cpu = encoded_weights.on_cpu and encoded_opt.on_cpu
        # on an accelerator the per-tensor check runs there, faster than on the host copy
        if not (on_cpu and all_finite(encoded_weights.runs + encoded_opt.runs)):
            refuse_nonfinite(self.model, weights, opt_tensors, state.global_step)
        callbacks: dict[str, str] = {}  # key -> its state as JSON
        cb_tensors: dict[str, torch.Tensor] = {}
        for key, cb in callback_keys(self.callbacks).items():
            tensor_state = getattr(cb, "tensor_state_dict", None)
            if tensor_state is not None:
                cb_tensors.update({f"{key}/{k}": v for k, v in tensor_state().items()})
            cb_state = cb.state_dict()
            if cb_state:
                try:  # encoded once, here: a state that is not JSON fails now, naming it
                    callbacks[key] = json.dumps(cb_state)
                except (TypeError, ValueError) as err:
                    raise UserError(
                        f"callback {key}: state_dict() must return JSON values ({err})"
                    ) from None
        metrics_bytes = None
        if self.metrics_path is not None:
            try:
                metrics_bytes = os.stat(self.metrics_path).st_size
            except FileNotFoundError:
                pass
        saved = {
            "step": state.global_step,
            "epoch": state.epoch,
            "progress": state.state_dict(),
            "meter": state.train_meter.state_dict() if state.in_epoch else None,
            "train_metrics": state.train_metrics,
            "val_metrics": state.val_metrics,
            "optimizer": opt_meta,
            "metrics_bytes": metrics_bytes,
        }
        # one JSON object: the changing part, then the history and the run's fixed part, each
        # encoded as above (key order is not part of the format)
        rng = self._rng.json() if ranks is None else None
        if ranks is not None:  # rank 0's generators on top, the sums of every rank's metrics
            parts = [json.loads(text) for text in ranks]
            rng = json.dumps(parts[0]["rng"])
            if state.in_epoch:
                saved["meter"] = summed_meter(parts)
        changing = json.dumps(saved)
        if ranks is not None:
            changing = f'{changing[:-1]}, "ranks": [{", ".join(ranks)}]}}'
        encoded = ", ".join(f"{json.dumps(k)}: {text}" for k, text in callbacks.items())
        state_json = f'{changing[:-1]}, "rng": {rng}, "callbacks": {{{encoded}}}, '
        state_json += f'"history": {self._history_json(state.history)}, {self._fixed_json}}}\n'
        job.files = {
            "model.safetensors": weight_bytes,
            "optimizer.safetensors": opt_bytes,
            "model.json": self._info_bytes,
            "state.json": state_json.encode(),
        }
        if cb_tensors:
            job.files["callbacks.safetensors"] = tensors_to_bytes(cb_tensors)
        job.meta = {"step": state.global_step, "epoch": state.epoch, "created": time.time()}
        return job
