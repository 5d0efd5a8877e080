"""The ``[optim] name`` values: sgd (momentum, nesterov, weight_decay), adam, adamw, rmsprop.

Each is PyTorch's own optimizer with PyTorch's defaults unless the config says otherwise; the
learning rate defaults per optimizer (see :data:`gradstep.config.DEFAULT_LR`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gradstep.config import OptimSection


def build_optimizer(
    cfg: OptimSection, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # the config validates names
