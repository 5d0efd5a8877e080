"""``gs.Predictor``: a trained network with its training preprocessing in front — raw input in.

Training prepares data before the network sees it: integer pixels are divided by 255, samples
are reshaped to the training sample shape, and (``normalize = true``, the default) standardised
with the training split's mean and std. A checkpoint records this in ``model.json``, and
:func:`gradstep.inference.prepare_input` applies it: the one preparation ``gradstep predict``
and ``gradstep eval`` use. A :class:`Predictor` runs exactly that function before the network,
so ``predictor(x_raw)`` is what ``gradstep predict`` and ``trainer.predict`` compute, for input
as the data source gives it (the CSV's feature columns, MNIST's uint8 images or those over 255).

Who makes one:

* ``gs.load_model(ckpt)`` — from the checkpoint's ``model.json`` (``preprocessing=False``
  gives the bare network, which takes prepared input);
* ``result.predictor`` after ``trainer.fit`` — the same record, built in memory from the run's
  normalisation and sample shape (:func:`gradstep.checkpoint.setup.run_model_info`), so the
  in-memory and the loaded predictor agree;
* ``state.preprocess(x)`` in a callback applies the same preparation alone.

Example::

    predictor = gs.load_model("runs/mnist_simplenet")   # a Predictor
    predictor(images_uint8).argmax(1)                      # (N, 28, 28) uint8, as in the files
    predictor.network                                      # the bare SimpleNet
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def _placement(network: nn.Module) -> torch.Tensor | None:
    """A floating tensor of ``network`` (a parameter, else a buffer): where its input goes."""
    for t in (*network.parameters(), *network.buffers()):
        if t.is_floating_point():
            return t
    return None


def prepare_for(network: nn.Module | None, x: Any, model_info: Mapping[str, Any]) -> torch.Tensor:
    """``prepare_input(x, model_info)`` — training's preparation — moved to ``network``'s
    device and floating dtype (a network in float64 or bf16 gets its own dtype)."""
    from gradstep.inference import prepare_input

    prepared = prepare_input(x, dict(model_info))
    where = _placement(network) if network is not None else None
    if where is not None and prepared.is_floating_point():
        prepared = prepared.to(device=where.device, dtype=where.dtype)
    return prepared


def describe_preprocessing(model_info: Mapping[str, Any]) -> str:
    """One line for what a ``model.json`` record does to raw input, e.g.
    ``"uint8 / 255, samples (1, 28, 28), normalize mean 0.1307, std 0.3081"``."""
    from gradstep.checkpoint.snapshot import normalizer_from_json

    spec = model_info.get("input") or {}
    parts = [f"uint8 input / {spec.get('uint8_divisor', 255)}"]
    shape = tuple(spec.get("sample_shape") or ())
    if shape:
        parts.append(f"samples {shape}")
    try:
        norm = normalizer_from_json(model_info.get("normalize"))
    except (KeyError, TypeError, ValueError, RuntimeError):  # a malformed record: say so
        return ", ".join([*parts, "normalize (unreadable)"])
    parts.append("no normalisation" if norm is None else f"normalize {norm.describe()}")
    return ", ".join(parts)


def _strip_network_prefix(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """state_dict post-hook: ``network.fc1.weight`` -> ``fc1.weight`` (in place, in order)."""
    inner = prefix + "network."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            metadata[(prefix + key[len(inner) :]) if key != inner[:-1] else prefix[:-1]] = (
                metadata.pop(key)
            )


def _add_network_prefix(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """load_state_dict pre-hook: the network's own keys (``fc1.weight``) load into
    ``network.fc1.weight``; keys already under ``network.`` are taken as they are."""
    inner = prefix + "network."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k.startswith(prefix) and not k.startswith(inner)]:
            metadata.setdefault(inner + key[len(prefix) :], metadata[key])
        if prefix[:-1] in metadata:
            metadata.setdefault(inner[:-1], metadata[prefix[:-1]])


def _name_network_keys(module: nn.Module, incompatible: Any) -> None:
    """load_state_dict post-hook: missing / unexpected keys are named as the caller gave them
    (``fc1.weight``, not ``network.fc1.weight``) when the predictor is the module loaded."""
    for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
        keys[:] = [k.removeprefix("network.") for k in keys]


class Predictor(nn.Module):
    """A trained network with the training preprocessing in front of it: it takes raw input.

    ``predictor(x)`` is ``predictor.network(prepare_input(x, predictor.model_info))``, where
    :func:`~gradstep.inference.prepare_input` is the preparation ``gradstep predict`` applies:
    integer pixels divided by 255, samples reshaped to the training sample shape, the training
    split's mean/std applied. So the input is the data as its source gives it — a CSV's feature
    columns as numbers, images as uint8 (or float already in [0, 1], as the MNIST source gives
    them) — as a tensor or array with a batch dimension (what ``prepare_input`` also accepts, it
    accepts). The output is the network's: logits for a classifier (``.argmax(1)`` gives the
    class, ``.softmax(1)`` the probabilities ``gradstep predict`` writes), values for
    regression, on the network's device.

    Args:
        network: the bare model (the one ``trainer.fit`` trained), stored as ``.network``.
        model_info: what the checkpoint's ``model.json`` holds (``input.sample_shape``,
            ``input.uint8_divisor``, ``normalize``, ``task``, ...), stored as ``.model_info``.

    It is a plain ``nn.Module``: ``.to(device)``, ``.eval()``, gradients (``torch.no_grad()``
    is yours to choose) behave as usual, and the network's own mode is its mode.
    ``state_dict()`` / ``load_state_dict()`` hold the network's weights under the network's own
    keys — the keys of ``model.safetensors`` and of ``MyNet().state_dict()`` — because the
    preprocessing is not a weight: it is the record in ``model_info``. So
    ``predictor.state_dict()`` equals ``predictor.network.state_dict()``, and a network's
    weights load into a predictor and back. (``named_parameters()`` still shows the
    ``network.`` path, as for any submodule.)

    Example::

        predictor = gs.load_model("runs/x")             # a Predictor, in eval mode
        with torch.no_grad():
            classes = predictor(x_raw).argmax(1)       # = gradstep predict's "prediction"
        bare = predictor.network                       # takes predictor.preprocess(x_raw)
    """

    network: nn.Module

    def __init__(self, network: nn.Module, model_info: Mapping[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.model_info: dict[str, Any] = copy.deepcopy(dict(model_info))
        self.register_state_dict_post_hook(_strip_network_prefix)
        self.register_load_state_dict_pre_hook(_add_network_prefix)
        self.register_load_state_dict_post_hook(_name_network_keys)

    @property
    def task(self) -> str:
        """``"multiclass"``, ``"binary"`` or ``"regression"``: what the outputs are."""
        return str(self.model_info.get("task", "multiclass"))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The training sample shape (without the batch dimension); ``()`` when not recorded."""
        return tuple(int(d) for d in (self.model_info.get("input") or {}).get("sample_shape") or ())

    def preprocess(self, x: Any) -> torch.Tensor:
        """``x`` prepared as training prepared its data: the network's input, on its device."""
        return prepare_for(self.network, x, self.model_info)

    def forward(self, x: Any) -> torch.Tensor:
        """The network's outputs for raw input ``x`` (see the class docstring)."""
        return self.network(self.preprocess(x))

    def extra_repr(self) -> str:
        return f"preprocessing: {describe_preprocessing(self.model_info)}"


__all__ = ["Predictor", "describe_preprocessing", "prepare_for"]
