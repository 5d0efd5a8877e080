"""Build a model from ``[model] name`` and ``[model.args]``.

``name`` is a zoo name (``simplenet``, ``mlp``, ``cnn``), ``"file.py:ClassName"`` (relative to
the config file's folder, then the working directory) or ``"package.module:ClassName"``.

Arguments the constructor takes but the config leaves out are inferred from the data, so
``[model] name = "mlp"`` alone fits any tabular or image data:

==================================  =========================================================
constructor parameter               inferred value
==================================  =========================================================
``input_size`` / ``in_features``    the number of features per sample (``prod(X.shape[1:])``)
``num_classes`` / ``out_features``  the number of classes, or the target's width (regression)
``in_channels``                     ``X.shape[1]`` for image-shaped input ``(N, C, H, W)``
``image_size``                      ``X.shape[2]``
==================================  =========================================================

The resolved arguments are what the run records, so the model can be rebuilt without the data.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gradstep.errors import UserError, did_you_mean
from gradstep.importing import is_import_spec, load_object
from gradstep.models.zoo import CNN, MLP, ZOO, SimpleNet

__all__ = ["CNN", "MLP", "ZOO", "DataShape", "SimpleNet", "build_model", "resolve_model_class"]


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about the data: one sample's shape and the output width."""

    sample_shape: tuple[int, ...]
    outputs: int


def resolve_model_class(name: str, base_dir: Path | None = None) -> type[nn.Module]:
    if name in ZOO:
        return ZOO[name]
    if is_import_spec(name):
        cls = load_object(name, base_dir, "[model] name")
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise UserError(f"[model] name = {name!r} is not a torch.nn.Module subclass")
        return cls
    raise UserError(
        f"[model] name = {name!r}: unknown model{did_you_mean(name, ZOO)}; "
        f"built in: {', '.join(ZOO)}, or 'file.py:ClassName'"
    )


def _inferred(shape: DataShape) -> dict[str, int]:
    features = 1
    for d in shape.sample_shape:
        features *= d
    out = {
        "input_size": features,
        "in_features": features,
        "num_classes": shape.outputs,
        "out_features": shape.outputs,
    }
    if len(shape.sample_shape) == 3:
        out["in_channels"] = shape.sample_shape[0]
        out["image_size"] = shape.sample_shape[1]
    return out


def build_model(
    name: str, args: dict[str, Any], shape: DataShape | None, base_dir: Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Return the model and the full constructor arguments used (given + inferred)."""
    cls = resolve_model_class(name, base_dir)
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [
        n
        for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    for key in args:
        if key not in named and not accepts_any:
            raise UserError(
                f"[model.args] {key}: {name!r} takes no such argument{did_you_mean(key, named)}; "
                f"it takes: {', '.join(named)}"
            )
    if name == "cnn" and shape is not None and len(shape.sample_shape) != 3:
        raise UserError(
            f"[model] name = 'cnn' needs image input (N, C, H, W); the data's samples have shape "
            f"{shape.sample_shape}"
        )
    resolved = dict(args)
    if shape is not None:
        for key, value in _inferred(shape).items():
            if key in named and key not in resolved:
                if key == "image_size" and len(shape.sample_shape) == 3:
                    if shape.sample_shape[1] != shape.sample_shape[2]:
                        continue
                resolved[key] = value
    missing = [
        n for n in named if params[n].default is inspect.Parameter.empty and n not in resolved
    ]
    if missing:
        raise UserError(f"[model.args] {missing[0]} is required by {name!r} and cannot be inferred")
    try:
        model = cls(**resolved)
    except (TypeError, ValueError) as err:
        raise UserError(f"[model] {name!r} could not be built with {resolved}: {err}") from None
    return model, resolved
