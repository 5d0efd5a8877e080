"""A model of your own, named from a config as "custom_model.py:TwoLayer".

`input_size` and `num_classes` are inferred from the data when the config does not set them.
"""

from torch import nn


class TwoLayer(nn.Module):
    def __init__(self, input_size: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(input_size, width), nn.Tanh(), nn.Linear(width, num_classes)
        )

    def forward(self, x):
        return self.net(x)
