"""Models the user built: ``trainer.fit(MyNet(...), ...)``.

A model given as a name (``[model] name``) is rebuilt from its name and ``[model.args]``. A
model given as an instance has no such record, so a checkpoint could not rebuild it — unless
its constructor records its arguments: :func:`save_init_args` (the idea of Lightning's
``save_hyperparameters``), called in ``__init__``. ``trainer.fit`` then writes the class and those
arguments into ``config.toml`` and every checkpoint's ``model.json``, and ``gs.load_model(ckpt)``
rebuilds the model without ``model=``, under the trust rule (:mod:`gradstep.trust`):

* a class from a plain module file inside the working directory is recorded as
  ``"file.py:Class"`` (the path relative to it), which loads from the code folder — the working
  directory, or ``code_dir=`` / ``--code-dir``;
* a class from a package (``mypkg.nets``) or from a module outside the working directory is
  recorded as ``"package.module:Class"``: loaded when your process has imported that module, or
  with ``trust_code=True``;
* a class defined in a script (``__main__``) cannot be found again: load it with
  ``gs.load_model(path, model=MyNet(...))``;
* a built-in zoo model (``gs.models.MLP(...)``) is recorded under its zoo name.

A model that is already ``torch.compile``'d is recorded, checkpointed and resumed as the module
it wraps (:func:`unwrap_compiled`): the checkpoint's keys have no ``_orig_mod.`` prefix, and
``load_model``, ``predict`` and ``export`` rebuild the plain class. Training still runs the
compiled module.

Example::

    class Net(nn.Module):
        def __init__(self, width: int = 32, classes: int = 10) -> None:
            super().__init__()
            gs.save_init_args(self)            # records {"width": ..., "classes": ...}
            self.fc = nn.Linear(width, classes)

    trainer.fit(Net(width=64), train=(X, y))
    gs.load_model("runs/net-data")             # Net(width=64, classes=10), weights loaded
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from torch import nn

INIT_ARGS = "_gradstep_init_args"
"""The attribute :func:`save_init_args` stores the recorded arguments under."""

_EMPTY = inspect.Parameter.empty


class _NotRecordable(Exception):
    def __init__(self, where: str, value: Any) -> None:
        super().__init__(where)
        self.where, self.value = where, value


def _plain(value: Any, where: str) -> Any:
    """``value`` as a checkpoint can hold it (JSON in ``model.json``, TOML in ``config.toml``):
    booleans, integers, finite floats, strings, and lists and string-keyed dicts of them;
    tuples become lists. Anything else raises :class:`_NotRecordable` naming the part."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real) and not isinstance(value, torch.Tensor):
        number = float(value)
        if not math.isfinite(number):
            raise _NotRecordable(where, value)
        return number
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise _NotRecordable(where, value)


def _is_default(value: Any, default: Any) -> bool:
    if default is _EMPTY:
        return False
    if value is default:
        return True
    try:
        same = value == default
    except Exception:  # a tensor, an object whose == fails: not provably the default
        return False
    return same if isinstance(same, bool) else False


def _init_frames(module: nn.Module) -> list[Any]:
    """The ``__init__`` frames, innermost first, that are constructing ``module`` right now
    (a subclass's ``__init__`` calling ``super().__init__(...)`` adds one)."""
    frames = []
    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    del frame
    while caller is not None and caller.f_code.co_name == "__init__":
        code = caller.f_code
        if code.co_argcount < 1 or caller.f_locals.get(code.co_varnames[0]) is not module:
            break
        frames.append(caller)
        caller = caller.f_back
    return frames


def save_init_args(module: nn.Module, *, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """Record the arguments ``module``'s constructor was called with, so that a checkpoint of
    a model passed to ``trainer.fit`` as an instance can rebuild it (``gs.load_model(ckpt)``
    without ``model=``). Call it in ``__init__``, before the arguments are reassigned (it reads
    their current values); in a subclass chain, the arguments of the outermost ``__init__``
    (the class being built) are recorded, wherever the call is.

    Recorded are booleans, integers, finite floats, strings, and lists (tuples become lists) and
    dicts of them: what ``model.json`` and ``config.toml`` can hold. An argument that is
    something else (a module, a tensor, a function, None) is left out when it is the
    parameter's default (the rebuilt model gets the same default) and is a ``TypeError``
    otherwise — such a model cannot be rebuilt from a checkpoint; load it with
    ``gs.load_model(path, model=MyNet(...))``. ``**kwargs`` are recorded by name; ``*args`` and
    positional-only parameters cannot be (a model is rebuilt as ``MyNet(**args)``).

    Args:
        module: the model under construction (``self``).
        ignore: argument names to leave out (they must have defaults, or the rebuild fails).

    Returns:
        The recorded arguments (also kept on the module: :func:`recorded_init_args`).

    Example::

        class Net(nn.Module):
            def __init__(self, width: int, classes: int = 10, act: type = nn.ReLU) -> None:
                super().__init__()
                gs.save_init_args(self)        # {"width": ..., "classes": 10}; act's default
                ...
    """
    frames = _init_frames(module)
    if not frames:
        raise TypeError(
            "gs.save_init_args(self) records a constructor's arguments: call it inside the "
            "model's __init__"
        )
    outer = frames[-1]
    cls = type(module).__qualname__
    code = outer.f_code
    if code.co_posonlyargcount > 1:
        raise TypeError(
            f"gs.save_init_args: {cls}.__init__ has positional-only parameters; a checkpoint "
            "rebuilds a model by keyword (MyNet(**args))"
        )
    info = inspect.getargvalues(outer)
    values = info.locals
    if info.varargs is not None and values.get(info.varargs):
        raise TypeError(
            f"gs.save_init_args: {cls}.__init__ was given *{info.varargs}; a checkpoint rebuilds "
            "a model by keyword (MyNet(**args)), so give those values names"
        )
    try:
        defaults = {
            name: p.default for name, p in inspect.signature(type(module)).parameters.items()
        }
    except (TypeError, ValueError):  # no signature to read: every argument counts as given
        defaults = {}
    given: dict[str, Any] = {name: values[name] for name in info.args[1:] if name in values}
    if info.keywords is not None:
        given.update(values.get(info.keywords) or {})
    skip = set(ignore)
    recorded: dict[str, Any] = {}
    for name, value in given.items():
        if name in skip:
            continue
        try:
            recorded[name] = _plain(value, name)
        except _NotRecordable as err:
            if _is_default(value, defaults.get(name, _EMPTY)):
                continue
            raise TypeError(
                f"gs.save_init_args: {cls}'s argument {err.where} = {_short(err.value)} "
                f"({type(err.value).__name__}) cannot be recorded in a checkpoint (numbers, "
                "strings, booleans, and lists and dicts of them can); pass ignore=[...] for an "
                "argument with a default, or load such a model with "
                "gs.load_model(path, model=MyNet(...))"
            ) from None
    object.__setattr__(module, INIT_ARGS, recorded)
    return dict(recorded)


def _short(value: Any) -> str:
    from gradstep.models.zoo import short_repr

    return short_repr(value, 60)


def recorded_init_args(model: nn.Module) -> dict[str, Any] | None:
    """The arguments :func:`save_init_args` recorded for ``model`` (a compiled model: for the
    module it wraps), or None."""
    args = unwrap_compiled(model).__dict__.get(INIT_ARGS)
    return dict(args) if isinstance(args, Mapping) else None


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``'d model wraps (``model._orig_mod``), or ``model`` itself.

    Its ``state_dict`` keys are the plain model's (no ``_orig_mod.`` prefix) and it shares every
    parameter with the compiled one, so checkpoints written from it load into the plain class.
    (Checked by class name: importing ``torch._dynamo`` to test ``isinstance`` costs seconds.)
    """
    wrappers = {"OptimizedModule": "_orig_mod", "DistributedDataParallel": "module"}
    while type(model).__name__ in wrappers:  # DDP's wrapper too: keys without "module."
        inner = model._modules.get(wrappers[type(model).__name__])
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def instance_name(cls: type, code_dir: Path | None = None) -> str:
    """How a checkpoint names ``cls`` so that ``load_model`` can find it again: its zoo name; a
    ``"file.py:Class"`` path relative to ``code_dir`` (default: the working directory) for a
    plain module file inside it (not inside a run directory); otherwise ``"module:Class"``."""
    from gradstep.models.zoo import ZOO

    for name, zoo_cls in ZOO.items():
        if cls is zoo_cls:
            return name
    module, qualname = cls.__module__, cls.__qualname__
    dotted = f"{module}:{qualname}"
    if module in ("__main__", "builtins") or "." in module or "<" in qualname:
        return dotted
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py") or hasattr(mod, "__path__"):
        return dotted  # a package's __init__, an extension module, a module without a file
    from gradstep.trust import inside_run

    folder = Path(code_dir if code_dir is not None else Path.cwd()).resolve()
    real = Path(file).resolve()
    if not real.is_relative_to(folder) or inside_run(real) is not None:
        return dotted
    return f"{real.relative_to(folder).as_posix()}:{qualname}"


def instance_spec(model: nn.Module, code_dir: Path | None = None) -> tuple[str, dict[str, Any]]:
    """``([model] name, [model.args])`` for a model passed as an instance (a compiled one: the
    module it wraps): :func:`instance_name` and the :func:`save_init_args` record, or ``{}``."""
    net = unwrap_compiled(model)
    return instance_name(type(net), code_dir), recorded_init_args(net) or {}


def outputs_note(outputs: int, task: str, data: Iterable[Any]) -> str | None:
    """A warning for a classifier with more outputs than the data has classes (labels
    ``0..C-1``): the extra outputs are never a target, so they only learn to be small — usually
    a ``num_classes`` left at another dataset's value. In-memory data only (a Dataset would
    cost a pass over it). ``data``: the training and validation ``(X, y)`` pairs (or None)."""
    if task != "multiclass" or outputs < 2:
        return None
    highest = -1
    for d in data:
        if not isinstance(d, tuple) or len(d[1]) == 0:
            if d is not None:
                return None
            continue
        highest = max(highest, int(d[1].max()))  # one sync, once, before training
    classes = max(highest + 1, 2)
    if highest < 0 or outputs <= classes:
        return None
    if outputs == classes + 1:
        unused = f"output {classes} never matches a label and only learns"
    else:
        unused = f"outputs {classes}-{outputs - 1} never match a label and only learn"
    return (
        f"the model has {outputs} outputs but the data has {classes} classes (labels 0-"
        f"{classes - 1}); {unused} to be unlikely: give the model {classes} outputs "
        "(num_classes), unless this data lacks classes it should have"
    )


__all__ = [
    "INIT_ARGS",
    "instance_name",
    "instance_spec",
    "outputs_note",
    "recorded_init_args",
    "save_init_args",
    "unwrap_compiled",
]
