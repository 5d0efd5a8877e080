"""What goes into a checkpoint, and back out: tensors to safetensors, everything else to JSON.

* the model's ``state_dict`` (parameters and buffers) → ``model.safetensors``
  (:func:`gradstep.checkpoint.encoding.tensors_to_bytes`);
* the optimizer's per-parameter tensors (momentum buffers, Adam moments, ``step``) →
  ``optimizer.safetensors`` as ``"<param index>.<name>"``; its ``param_groups`` and any
  non-tensor state → JSON;
* every random number generator a run draws from (Python's ``random``, NumPy's global generator,
  torch's CPU generator and each CUDA device's) → JSON (torch's byte states as base64).

The data order needs no generator state: each epoch's permutation is a pure function of
``(seed, epoch)`` (:mod:`gradstep.data.sampler`), so the position in the epoch is enough.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from typing import Any

import numpy as np
import torch


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, json_part)`` of ``opt.state_dict()``; the tensors are the live ones, so
    serialise them before the next step."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    meta = {"class": type(opt).__name__, "param_groups": groups, "scalars": scalars}
    return tensors, meta


def load_optimizer_state(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Restore what :func:`optimizer_state` saved into ``opt`` (built for the same parameters)."""
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pid, _, name = key.partition(".")
        state.setdefault(int(pid), {})[name] = t
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for saved, current in zip(meta["param_groups"], opt.param_groups, strict=False):
        # JSON turned tuples (Adam's betas) into lists; give them back their type
        groups.append(
            {
                k: tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v
                for k, v in saved.items()
            }
        )
    check_optimizer_tensors(opt, state)
    opt.load_state_dict({"state": state, "param_groups": groups})


# per-parameter state each optimizer's step() reads, shaped like its parameter
_PER_PARAM = {
    "SGD": ("momentum_buffer",),
    "Adam": ("exp_avg", "exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq"),
    "RMSprop": ("square_avg",),
}
_SHAPED = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg")


def check_optimizer_tensors(opt: torch.optim.Optimizer, state: dict[int, dict[str, Any]]) -> None:
    """Refuse (``ValueError``) optimizer state that would fail only at the next ``step()``,
    after a resume has already changed the run directory: a parameter index that does not
    exist, a buffer of another shape or dtype than its parameter, one the optimizer needs
    missing (Adam's ``exp_avg`` for a parameter it has stepped)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    needed = _PER_PARAM.get(type(opt).__name__, ())
    for pid, values in state.items():
        if not 0 <= pid < len(params):
            raise ValueError(f"state for parameter {pid}, the optimizer has {len(params)}")
        param = params[pid]
        for name in needed:
            if name == "momentum_buffer" and values.get(name) is None:
                continue  # SGD without momentum keeps none
            if name not in values:
                raise ValueError(f"parameter {pid}: no {name!r}")
        for name, t in values.items():
            if name in _SHAPED and isinstance(t, torch.Tensor):
                if t.shape != param.shape or t.dtype != param.dtype:
                    raise ValueError(
                        f"parameter {pid}: {name} is {t.dtype} {tuple(t.shape)}, the parameter "
                        f"{param.dtype} {tuple(param.shape)}"
                    )
            if name == "step" and isinstance(t, torch.Tensor) and t.numel() != 1:
                raise ValueError(f"parameter {pid}: step has {t.numel()} values")


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def _words(values: Any) -> str:
    if isinstance(values, np.ndarray):
        return base64.b64encode(values.astype("<u4", copy=False).tobytes()).decode()
    return base64.b64encode(struct.pack(f"<{len(values)}I", *values)).decode()  # 2x numpy's


def _unwords(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u4").astype(np.uint32)


def _python_rng(state: tuple[Any, ...]) -> list[Any]:
    version, mt, gauss = state
    return [version, _words(mt), gauss]


def _numpy_rng() -> list[Any]:
    npr = np.random.get_state(legacy=False)  # a third faster than the legacy tuple
    return [
        npr["bit_generator"],
        _words(npr["state"]["key"]),
        int(npr["state"]["pos"]),
        int(npr["has_gauss"]),
        float(npr["gauss"]),
    ]


def _cuda_rng() -> list[str] | None:
    if not torch.cuda.is_initialized():  # False without CUDA, and until a run uses it
        return None
    return [_b64(s) for s in torch.cuda.get_rng_state_all()]


def rng_state() -> dict[str, Any]:
    """Every global generator's state, as JSON-able values (the Mersenne Twister keys as
    base64 of their little-endian 32-bit words: cheaper to write than 624 numbers)."""
    out: dict[str, Any] = {
        "python": _python_rng(random.getstate()),
        "numpy": _numpy_rng(),
        "torch": _b64(torch.get_rng_state()),
    }
    cuda = _cuda_rng()
    if cuda is not None:
        out["cuda"] = cuda
    return out


class RngCapture:
    """:func:`rng_state` as JSON text, for a checkpoint at every save: a generator whose state
    has not changed since the last call is not encoded again (most runs never draw from
    Python's global generator, and a model without dropout never from torch's).

    Each state is still read in full at every call and compared with the last one, so the text
    is always exactly ``json.dumps(rng_state())``. NumPy's is read and encoded every time: its
    legacy generator caches a Gaussian outside the bit generator's state, and nothing cheaper
    than ``get_state`` tells whether that cache changed.

    Example::

        capture = RngCapture()
        text = capture.json()  # == json.dumps(rng_state())
    """

    def __init__(self) -> None:
        self._py: tuple[Any, str] = (None, "")
        self._torch: tuple[bytes, str] = (b"", "")

    def json(self) -> str:
        state = random.getstate()
        if state != self._py[0]:
            self._py = (state, json.dumps(_python_rng(state)))
        raw = torch.get_rng_state().numpy().tobytes()
        if raw != self._torch[0]:
            self._torch = (raw, json.dumps(base64.b64encode(raw).decode()))
        text = f'{{"python": {self._py[1]}, "numpy": {json.dumps(_numpy_rng())}, '
        text += f'"torch": {self._torch[1]}'
        cuda = _cuda_rng()
        if cuda is not None:
            text += f', "cuda": {json.dumps(cuda)}'
        return text + "}"


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` saved."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(_unwords(mt).tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, _unwords(keys), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        states = [_unb64(s) for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
