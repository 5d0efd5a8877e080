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
A model passed to ``trainer.fit`` as an instance records its own arguments with
:func:`~gradstep.models.instance.save_init_args` (see :mod:`gradstep.models.instance`).

Arguments that cannot make a model are a :class:`~gradstep.errors.UserError` naming
``[model.args]``: a zoo model's own checks (:class:`~gradstep.models.zoo.ModelArgError`), a
zoo model larger than :data:`MAX_ZOO_PARAMETERS` (counted on the ``meta`` device, which
allocates nothing and draws no random numbers, before the real one is built), and for any model
a constructor that fails to allocate its parameters or is given a negative size.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradstep.errors import UserError, did_you_mean, first_line
from gradstep.importing import is_import_spec, load_object
from gradstep.models.instance import save_init_args, unwrap_compiled
from gradstep.models.zoo import CNN, MLP, ZOO, ModelArgError, SimpleNet, short_repr

__all__ = [
    "CNN",
    "MAX_ZOO_PARAMETERS",
    "MLP",
    "ZOO",
    "DataShape",
    "ModelArgError",
    "SimpleNet",
    "build_model",
    "resolve_model_class",
    "save_init_args",
    "unwrap_compiled",
]

MAX_ZOO_PARAMETERS = 1_000_000_000
"""The most parameters a built-in model may have: 4 GB of float32 weights, 16 GB with Adam's
state and the gradients. The zoo is for small experiments; more is a typo in a width."""


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
    if cls in ZOO.values():
        _check_zoo_size(name, cls, args, resolved)
    try:
        model = cls(**resolved)
    except ModelArgError as err:
        raise _arg_error(err, args) from None
    except (TypeError, ValueError) as err:
        raise UserError(
            f"[model] {name!r} could not be built with {resolved}: {first_line(err)}"
        ) from None
    except (RuntimeError, MemoryError) as err:
        if not _bad_size(err):
            raise  # a bug in the model's code keeps its traceback
        raise UserError(
            f"[model.args] {_args_text(args or resolved)}: {name!r} could not be built: "
            f"{first_line(err)}"
        ) from None
    return model, resolved


def _args_text(args: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {short_repr(v)}" for k, v in args.items())


def _arg_error(err: ModelArgError, given: dict[str, Any]) -> UserError:
    inferred = "" if err.key in given else " (inferred from the data)"
    return UserError(f"[model.args] {err}{inferred}")


def _bad_size(err: BaseException) -> bool:
    """Whether a constructor's error is torch refusing a size: memory it cannot allocate
    (``DefaultCPUAllocator: can't allocate memory``, CUDA out of memory) or a negative one."""
    if isinstance(err, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(err)
    return "allocate" in text or "negative dimension" in text


def _check_zoo_size(
    name: str, cls: type[nn.Module], given: dict[str, Any], resolved: dict[str, Any]
) -> None:
    """Build a zoo model on the meta device and refuse one over :data:`MAX_ZOO_PARAMETERS`, so
    ``hidden = [10**12]`` is a clear error, not a failed 256 TB allocation (or a machine that
    swaps while it initialises 20 GB of weights)."""
    try:
        with torch.device("meta"):
            probe = cls(**resolved)
    except ModelArgError as err:
        raise _arg_error(err, given) from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        if "Overflow" in str(err) or isinstance(err, OverflowError):  # a width of 10**19
            raise UserError(
                f"[model.args] {_args_text(given or resolved)}: {name!r} could not be built: "
                "a size does not fit in 64 bits"
            ) from None
        raise UserError(
            f"[model] {name!r} could not be built with {resolved}: {first_line(err)}"
        ) from None
    count = sum(p.numel() for p in probe.parameters())
    if count > MAX_ZOO_PARAMETERS:
        raise UserError(
            f"[model.args] {_args_text(given or resolved)}: {name!r} would have {count:,} "
            f"parameters ({count * 4 / 1e9:,.0f} GB of float32), more than the "
            f"{MAX_ZOO_PARAMETERS:,} a built-in model may have"
        )
