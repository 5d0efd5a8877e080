"""The built-in models. Each flattens or reshapes its input itself, so one data source fits all.

``input_size`` / ``num_classes`` / ``in_channels`` / ``image_size`` are inferred from the data
when the config does not set them (see :func:`gradstep.models.build_model`).

Each constructor checks its arguments and raises :class:`ModelArgError` naming the one that is
wrong: torch takes a width of 0 without a word (a layer that outputs nothing), a negative width
fails deep inside ``torch.empty``, and a NaN dropout silently means no dropout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import torch
from torch import nn

from gradstep.models.instance import save_init_args


class ModelArgError(ValueError):
    """A built-in model's constructor argument is out of range: ``key = value``, ``expected``.

    :func:`gradstep.models.build_model` turns it into ``[model.args] key = value: expected ...``.
    """

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key} = {short_repr(value)}: expected {expected}")
        self.key, self.value, self.expected = key, value, expected


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def _is_count(value: Any) -> bool:
    """An integer (Python's or NumPy's, not a bool) of at least 1."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def _positive(key: str, value: Any) -> int:
    """``value`` as a layer width or count: a positive integer."""
    if not _is_count(value):
        raise ModelArgError(key, value, "a positive integer")
    return int(value)


def _widths(key: str, value: Any) -> list[int]:
    """``value`` as a list of layer widths (possibly empty), each a positive integer."""
    ok = isinstance(value, Sequence) and not isinstance(value, str | bytes)
    if not ok or not all(_is_count(v) for v in value):
        raise ModelArgError(key, value, "a list of positive integers (layer widths)")
    return [int(v) for v in value]


def _probability(key: str, value: Any) -> float:
    """``value`` as a dropout rate: a finite number in [0, 1) (1 would zero every input)."""
    ok = isinstance(value, Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value < 1:
        raise ModelArgError(key, value, "a number in [0, 1)")
    return float(value)


class SimpleNet(nn.Module):
    """The tutorials' two-layer net: Linear → ReLU → Linear (e.g. MNIST 784-128-10).

    Example::

        model = SimpleNet(input_size=784, hidden_size=128, num_classes=10)
    """

    def __init__(self, input_size: int, num_classes: int, hidden_size: int = 128) -> None:
        super().__init__()
        input_size = _positive("input_size", input_size)
        num_classes = _positive("num_classes", num_classes)
        hidden_size = _positive("hidden_size", hidden_size)
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, num_classes)
        save_init_args(self)  # after the checks: an instance passed to fit can be rebuilt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


class MLP(nn.Module):
    """A multi-layer perceptron: for each width in ``hidden``, Linear [→ BatchNorm1d] → ReLU
    [→ Dropout]; then a Linear to ``num_classes`` outputs.

    Example::

        model = MLP(input_size=64, num_classes=10, hidden=[64, 32], batchnorm=True, dropout=0.1)
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden: Sequence[int] = (64,),
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width = _positive("input_size", input_size)
        num_classes = _positive("num_classes", num_classes)
        hidden, dropout = _widths("hidden", hidden), _probability("dropout", dropout)
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        save_init_args(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(nn.Module):
    """A small conv net for 1×28×28 (MNIST) and 1×8×8 (digits) images: per entry of
    ``channels`` a 3×3 conv → BatchNorm2d → ReLU → 2×2 max-pool, then Linear → ReLU → Linear.

    Example::

        model = CNN(in_channels=1, num_classes=10, image_size=28)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 28,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        c = _positive("in_channels", in_channels)
        num_classes = _positive("num_classes", num_classes)
        size, hidden = _positive("image_size", image_size), _positive("hidden", hidden)
        layers: list[nn.Module] = []
        for out in _widths("channels", channels):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * size * size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        self.image_size = image_size
        save_init_args(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # flattened square images
            x = x.view(len(x), -1, self.image_size, self.image_size)
        return self.head(self.features(x))


ZOO: dict[str, type[nn.Module]] = {"simplenet": SimpleNet, "mlp": MLP, "cnn": CNN}
