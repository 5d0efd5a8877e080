"""The ``[train] loss`` values, and what kind of task each one implies.

=====================  ============  ===================================  ===================
loss                   task          targets                              metric besides loss
=====================  ============  ===================================  ===================
``cross_entropy``      multiclass    int64 class ids in ``[0, classes)``   accuracy (argmax)
``bce_with_logits``    binary        floats in [0, 1], shaped as output    accuracy (logit > 0)
``mse``, ``l1``        regression    floats, shaped as the output         mean absolute error
=====================  ============  ===================================  ===================

All use ``reduction="mean"``, which is what lets the loop weight micro-batches by their sample
count when it accumulates gradients.
"""

from __future__ import annotations

from torch import nn

TASK = {
    "cross_entropy": "multiclass",
    "bce_with_logits": "binary",
    "mse": "regression",
    "l1": "regression",
}


def build_loss(name: str, label_smoothing: float = 0.0) -> nn.Module:
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "bce_with_logits":
        return nn.BCEWithLogitsLoss()
    if name == "mse":
        return nn.MSELoss()
    if name == "l1":
        return nn.L1Loss()
    raise ValueError(f"unknown loss {name!r}")  # the config validates names; this is a bug
