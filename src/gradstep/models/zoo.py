"""The built-in models. Each flattens or reshapes its input itself, so one data source fits all.

``input_size`` / ``num_classes`` / ``in_channels`` / ``image_size`` are inferred from the data
when the config does not set them (see :func:`gradstep.models.build_model`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SimpleNet(nn.Module):
    """The tutorials' two-layer net: Linear → ReLU → Linear (e.g. MNIST 784-128-10).

    Example::

        model = SimpleNet(input_size=784, hidden_size=128, num_classes=10)
    """

    def __init__(self, input_size: int, num_classes: int, hidden_size: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, num_classes)

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
        layers: list[nn.Module] = []
        width = input_size
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
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for out in channels:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # flattened square images
            x = x.view(len(x), -1, self.image_size, self.image_size)
        return self.head(self.features(x))


ZOO: dict[str, type[nn.Module]] = {"simplenet": SimpleNet, "mlp": MLP, "cnn": CNN}
